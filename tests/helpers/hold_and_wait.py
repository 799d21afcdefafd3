"""Creates an anonymous array, hands it to a spawned child, then waits to be killed.

Prints the child's pid once the child has written into the array.
"""

import multiprocessing as mp
import sys
import time

import ndshm


def child(a):
    a[0] = 7
    time.sleep(120)


if __name__ == "__main__":
    a = ndshm.zeros(int(sys.argv[1]) // 8)
    p = mp.get_context("spawn").Process(target=child, args=(a,), daemon=True)
    p.start()
    while a[0] != 7:
        time.sleep(0.01)
    print(p.pid, flush=True)
    time.sleep(120)
