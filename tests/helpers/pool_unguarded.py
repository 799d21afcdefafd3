"""A script that forgets `if __name__ == "__main__":`: its workers die
while starting (they re-run this module). The pool must say so, not loop."""

import ndshm

print(ndshm.Pool(workers=2).map(abs, [-1, -2]))
