"""Command-line converters: raw or foreign dataset formats -> RecBole atomic files + feature files.

Each converter is ``python -m dataset_converters.<name> <input> <output_root> [--force] ...`` and
writes ``<output_root>/<name>/``: ``<name>.{train,valid,test}.inter`` (RecBole benchmark files
keeping the split), the modality feature files and ``<name>.yaml`` (found automatically by
``run_recbole_mm.py --dataset=<name> --data_path=<output_root>``). Inputs are never modified;
output is staged in a temporary folder and moved into place in one rename; an existing output
folder is only replaced with ``--force``, and a second converter writing the same folder at the
same time fails (``<output_root>/<name>.lock``). Bad input -- a repeated (user, item) row or a pair
in two splits (``--dedupe`` drops them), an empty split, a filter that removes everything, NaN/inf,
non-numeric or float32-overflowing features, a feature matching no item -- ends with one line
``error: ...`` naming the file, field and row, exit status 2, and nothing written.
"""
