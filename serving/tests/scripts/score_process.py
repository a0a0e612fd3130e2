"""A script that describes the process it runs in: environment, folder, thread pools, randomness."""

import os
import sys

import numpy as np
import sklearn.linear_model  # noqa: F401 - loads OpenMP and scipy's BLAS, as most models do
from threadpoolctl import threadpool_info


def init():
    pass


def run(raw_data):
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "env": dict(os.environ),
        "pools": {pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()},
        "random": float(np.random.random()),
    }
