"""A main module that records every import of itself (pid, module name and
sys.argv) in the file named by argv[1], defines a class its pool items are made of,
and starts two pools with the default start method. Prints, as JSON, the
results, the workers' pids and the environment variable ndshm uses to hand
the main module's path to the fork server, as the parent and a worker see it."""

import json
import os
import sys

with open(sys.argv[1], "a") as f:
    f.write(json.dumps([os.getpid(), __name__, sys.argv]) + "\n")

import ndshm
from ndshm.startmethod import MAIN_PATH_ENV


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def double(p: Point) -> int:
    return p.x * 2


def env(_: object) -> str | None:
    return os.environ.get(MAIN_PATH_ENV)


if __name__ == "__main__":
    out: dict = {"results": [], "pids": [], "parent_env": None, "worker_env": []}
    for _ in range(2):
        with ndshm.Pool(2) as pool:
            out["results"].append(pool.map(double, [Point(1), Point(2)]))
            out["pids"] += pool.pids
            out["worker_env"] += pool.map(env, range(2))
    out["parent_env"] = os.environ.get(MAIN_PATH_ENV)
    print(json.dumps(out))
