"""Starts a pool, makes sure its workers run, prints their pids, then waits
to be killed (the test SIGKILLs this process).

Usage: pool_parent_waits.py [START_METHOD] [busy]
  With "busy", a long map is running in the workers when the parent dies.
"""

import sys
import time

import ndshm


def slow(x):
    time.sleep(0.2)
    return x


def main() -> None:
    method = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "default" else None
    busy = "busy" in sys.argv[2:]
    pool = ndshm.Pool(workers=2, start_method=method)
    assert pool.map(abs, range(-4, 4)) == [4, 3, 2, 1, 0, 1, 2, 3]
    print(*pool.pids, flush=True)
    if busy:
        pool.map(slow, range(5000), chunksize=1)
    time.sleep(120)


if __name__ == "__main__":
    main()
