"""Hyper-parameter search: python run_hyper.py --model=M --dataset=NAME --data_path=DIR --params_file=F [--max_evals=N]"""

from recbole_mm.hyper import main

if __name__ == "__main__":
    raise SystemExit(main())  # 2 after a one-line error for bad input
