"""``python -m torchrl_bamdp.policies [--grid-size N --episode-length L --episodes K]``: print the
exact Bayes-optimal GridNavi returns (see :func:`torchrl_bamdp.policies.bayes_optimal.main`)."""

from torchrl_bamdp.policies.bayes_optimal import main

if __name__ == "__main__":
    main()
