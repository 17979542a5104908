"""Hyper-parameter search: python run_hyper.py --model=M --dataset=NAME --data_path=DIR [--params_file=F] [--budget=N]

Without --params_file it searches the space that ships with the model (see recbole_mm/hyper.py).
"""

from recbole_mm.hyper import main

if __name__ == "__main__":
    raise SystemExit(main())  # 2 after a one-line error for bad input
