"""Predict with a shipped foundation model at any (N, λ): the installed ``qvmc-predict`` command.

    python examples/predict.py --n 9 --lam 3.7      # the same as: qvmc-predict --n 9 --lam 3.7

See ``qvmc.predict`` (``qvmc-predict --help``) for the flags and what it writes.
"""

from qvmc.predict import main

if __name__ == '__main__':
    main()
