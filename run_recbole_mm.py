"""Train and evaluate a model: python run_recbole_mm.py --model=VBPR --dataset=lfm2k --data_path=DIR [--key=value ...]"""

from recbole_mm.quick_start import main

if __name__ == "__main__":
    raise SystemExit(main())  # 2 after a one-line error for bad input
