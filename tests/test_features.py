"""Feature file validation: every error names the file and the row / item id at fault."""

import numpy as np
import pytest

from recbole_mm.data.features import (
    FeatureError,
    ModalitySpec,
    align_to_items,
    fill_missing,
    parse_modalities,
    read_feature_matrix,
    read_id_file,
    row_tokens_for,
)


def _spec(tmp_path, name="text", ids=None):
    return ModalitySpec(name, str(tmp_path / f"{name}_feat.npy"), ids)


def test_parse_modalities_forms_and_sidecar(tmp_path):
    (tmp_path / "b_feat.ids").write_text("1\n")
    specs = parse_modalities({"a": "a_feat.npy", "b": "b_feat.npy", "c": {"file": "c.npy", "ids": "c.txt"}},
                             str(tmp_path))
    assert [s.name for s in specs] == ["a", "b", "c"]
    assert specs[0].ids_path is None
    assert specs[1].ids_path == str(tmp_path / "b_feat.ids")  # sidecar found
    assert specs[2].ids_path == str(tmp_path / "c.txt")
    with pytest.raises(FeatureError, match="modalities.bad"):
        parse_modalities({"bad": 3}, str(tmp_path))


def test_missing_file(tmp_path):
    with pytest.raises(FeatureError, match=r"modality 'text' file .*text_feat.npy: file not found"):
        read_feature_matrix(str(tmp_path / "text_feat.npy"), "text")


def test_not_2d(tmp_path):
    np.save(tmp_path / "text_feat.npy", np.zeros(5))
    with pytest.raises(FeatureError, match=r"text_feat.npy: expected a 2-D array .* shape \(5,\)"):
        read_feature_matrix(str(tmp_path / "text_feat.npy"), "text")


def test_not_npy(tmp_path):
    (tmp_path / "text_feat.npy").write_text("hello")
    with pytest.raises(FeatureError, match="cannot be read"):
        read_feature_matrix(str(tmp_path / "text_feat.npy"), "text")


def test_duplicate_and_blank_ids(tmp_path):
    (tmp_path / "dup.ids").write_text("a\nb\na\n")
    with pytest.raises(FeatureError, match=r"dup.ids: duplicate item id 'a' on rows 0 and 2"):
        read_id_file(str(tmp_path / "dup.ids"))
    (tmp_path / "blank.ids").write_text("a\n\nb\n")
    with pytest.raises(FeatureError, match=r"blank.ids: empty item id on line 2"):
        read_id_file(str(tmp_path / "blank.ids"))


def test_unknown_id_in_mapping(tmp_path):
    (tmp_path / "m.ids").write_text("1\n2\nzzz\n")
    spec = _spec(tmp_path, ids=str(tmp_path / "m.ids"))
    with pytest.raises(FeatureError, match=r"m.ids row 2: unknown item id 'zzz'"):
        row_tokens_for(spec, 3, ["1", "2", "3"])


def test_wrong_row_count_with_ids(tmp_path):
    (tmp_path / "m.ids").write_text("1\n2\n")
    spec = _spec(tmp_path, ids=str(tmp_path / "m.ids"))
    with pytest.raises(FeatureError, match=r"wrong row count: .*text_feat.npy has 3 rows but id file .*m.ids lists 2"):
        row_tokens_for(spec, 3, ["1", "2"])


def test_wrong_row_count_implicit(tmp_path):
    with pytest.raises(FeatureError, match=r"wrong row count: .* has 3 rows but item id '7' needs row 7"):
        row_tokens_for(_spec(tmp_path), 3, ["0", "1", "7"])


def test_implicit_rule_needs_integer_tokens(tmp_path):
    with pytest.raises(FeatureError, match=r"item id 'B00X' is not an integer"):
        row_tokens_for(_spec(tmp_path), 3, ["0", "B00X"])


def test_nan_row_named(tmp_path):
    matrix = np.ones((4, 2))
    matrix[2, 1] = np.nan
    id2token = np.array(["[PAD]", "3", "2", "0", "1"], dtype=object)
    with pytest.raises(FeatureError, match=r"row 2 \(item id '2'\) contains NaN or inf"):
        align_to_items(matrix, np.array(["0", "1", "2", "3"]), id2token, _spec(tmp_path))


def test_alignment_follows_tokens(tmp_path):
    matrix = np.arange(8, dtype=np.float64).reshape(4, 2)  # row r = [2r, 2r+1]
    id2token = np.array(["[PAD]", "c", "a", "d"], dtype=object)
    aligned, present = align_to_items(matrix, np.array(["a", "b", "c", "d"]), id2token, _spec(tmp_path))
    assert aligned.dtype == np.float32
    np.testing.assert_array_equal(aligned, [[0, 0], [4, 5], [0, 1], [6, 7]])
    np.testing.assert_array_equal(present, [False, True, True, True])


@pytest.mark.parametrize("policy,expected", [("mean", [2.0, 3.0]), ("zero", [0.0, 0.0])])
def test_missing_policies(tmp_path, policy, expected):
    aligned = np.array([[0, 0], [1, 2], [0, 0], [3, 4]], dtype=np.float32)
    present = np.array([False, True, False, True])
    out = fill_missing(aligned.copy(), present, policy, _spec(tmp_path), np.array(["[PAD]", "a", "b", "c"]))
    np.testing.assert_allclose(out[2], expected)
    np.testing.assert_allclose(out[0], [0, 0])  # padding untouched


def test_missing_policy_error_names_items(tmp_path):
    aligned = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(FeatureError, match=r"1 items have no row .* item ids 'b'"):
        fill_missing(aligned, np.array([False, True, False]), "error", _spec(tmp_path), np.array(["[PAD]", "a", "b"]))
    with pytest.raises(FeatureError, match="missing_modality"):
        fill_missing(aligned, np.array([False, True, False]), "median", _spec(tmp_path), np.array(["[PAD]", "a", "b"]))


def test_neighbour_impute_by_hand():
    from recbole_mm.data.features import neighbour_impute

    # items 1..4 (0 = padding); item 3 lacks the modality, item 4 too and nobody co-interacted with it
    feats = np.array([[0, 0], [1, 0], [0, 1], [0, 0], [0, 0]], dtype=np.float32)
    present = np.array([False, True, True, False, False])
    # user 0: items 1, 3; user 1: items 1, 2, 3; user 2: item 2 twice (a duplicate counts once); user 3: item 4
    users = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    items = np.array([1, 3, 1, 2, 3, 2, 2, 4])
    out, n_nb, n_mean = neighbour_impute(feats, present, users, items)
    # c(3,1) = 2 users, c(3,2) = 1 user -> (2*[1,0] + 1*[0,1]) / 3; item 4 only meets itself -> mean of present
    np.testing.assert_allclose(out[3], [2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(out[4], [0.5, 0.5])
    np.testing.assert_array_equal(out[:3], feats[:3])  # present rows and padding untouched
    assert (n_nb, n_mean) == (1, 1)
