"""A program that uses an ndshm.Pool and the stdlib's and joblib's pools,
each with its default start method, on one shared array: each pool fills
two rows through handles (numpy.copyto, importable everywhere, so the
program may also be read from stdin). argv[1] says whether ndshm's pool
starts first or last. Prints, as JSON, the start methods and each row's
sum as the parent sees it."""

import concurrent.futures
import json
import multiprocessing
import sys

import joblib
import numpy as np

import ndshm

COLS = 1 << 16


def rows(a, first):
    return [a[first], a[first + 1]], [float(first + 1), float(first + 2)]


if __name__ == "__main__":
    a = ndshm.zeros((8, COLS))
    out = {"default": multiprocessing.get_start_method()}

    def with_ndshm():
        with ndshm.Pool(2) as pool:
            pool.starmap(np.copyto, zip(*rows(a, 0)))
            out["ndshm"] = pool.start_method

    if sys.argv[1] == "ndshm-first":
        with_ndshm()
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        list(ex.map(np.copyto, *rows(a, 2)))
    with multiprocessing.Pool(2) as mp_pool:
        mp_pool.starmap(np.copyto, zip(*rows(a, 4)))
    joblib.Parallel(n_jobs=2)(joblib.delayed(np.copyto)(v, x) for v, x in zip(*rows(a, 6)))
    if sys.argv[1] == "ndshm-last":
        with_ndshm()
    out["sums"] = a.sum(axis=1).tolist()
    print(json.dumps(out))
