"""Starts a pool, prints its worker pids, then runs a long map until it is
interrupted (the test sends SIGINT to this process only).

Usage: pool_ctrl_c.py MODE [START_METHOD]
  MODE "with": the pool is a context manager; "bare": it is never shut down
  explicitly (left to the interpreter's exit).
"""

import faulthandler
import signal
import sys
import time

import ndshm


def slow(x):
    time.sleep(0.1)
    return x


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's way to see where it hangs
    mode = sys.argv[1]
    method = sys.argv[2] if len(sys.argv) > 2 else None
    if mode == "with":
        with ndshm.Pool(workers=2, start_method=method) as pool:
            print(*pool.pids, flush=True)
            pool.map(slow, range(2000), chunksize=1)
    else:
        pool = ndshm.Pool(workers=2, start_method=method)
        print(*pool.pids, flush=True)
        pool.map(slow, range(2000), chunksize=1)
    print("the map finished", flush=True)


if __name__ == "__main__":
    main()
