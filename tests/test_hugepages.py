"""Huge pages for shared memory where the system allows them.

The kernel's default gives memfds 4 KiB pages. ndshm then keeps big
anonymous segments in a private tmpfs mounted with ``huge=within_size``
(``ndshm::tmpfs``); with ``/sys/kernel/mm/transparent_hugepage/shmem_enabled``
at ``advise``, it keeps memfds, marks its mappings ``MADV_HUGEPAGE`` and
reserves through them; ``NDSHM_HUGE_PAGES=off`` asks for huge pages nowhere.
Either way a big segment's memory comes in 2 MiB pages. These tests switch
the setting (as root) and the variable, and put both back afterwards;
ndshm reads them again at most once a second, hence the pauses.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest

import ndshm
from ndshm import _native
from ndshm.arrays import empty_lazy, populate

SHMEM_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
MiB = 1 << 20

pytestmark = pytest.mark.skipif(
    not (SHMEM_ENABLED.exists() and os.access(SHMEM_ENABLED, os.W_OK)),
    reason="needs a kernel with shmem THP and root, to switch shmem_enabled",
)


def _selected() -> str:
    text = SHMEM_ENABLED.read_text()
    return text[text.index("[") + 1 : text.index("]")]


@pytest.fixture(scope="module", params=["advise", "never", "never+off"])
def shmem_thp(request):
    """shmem_enabled (and NDSHM_HUGE_PAGES after a +) set to the parameter
    for the test, then put back; the value is whether ndshm's big anonymous
    segments should get huge pages."""
    setting, _, env = request.param.partition("+")
    before, env_before = _selected(), os.environ.get("NDSHM_HUGE_PAGES")
    SHMEM_ENABLED.write_text(setting)
    if env:
        os.environ["NDSHM_HUGE_PAGES"] = env
    time.sleep(1.1)  # ndshm's reading of the settings is at most a second old
    try:
        yield not env and (setting == "advise" or _native.private_tmpfs())
    finally:
        SHMEM_ENABLED.write_text(before)
        if env_before is None:
            os.environ.pop("NDSHM_HUGE_PAGES", None)
        else:
            os.environ["NDSHM_HUGE_PAGES"] = env_before
        time.sleep(1.1)


def huge_kib(addr: int, pid: int | str = "self") -> int:
    """KiB of the mapping holding `addr` that are mapped as huge pages."""
    inside, total = False, 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith(("ShmemPmdMapped:", "FilePmdMapped:")):
            total += int(line.split()[1])
    return total


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def expect_huge(kib: int, wanted: bool) -> None:
    if wanted:
        assert kib > 0, "no huge pages where they should be"
    else:
        assert kib == 0, "huge pages although neither the system nor ndshm asks for them"


def fd_link(a: np.ndarray) -> str:
    seg = _native.view_of(a)[0]
    return os.readlink(f"/proc/self/fd/{seg.fd}")


def test_created_arrays_get_huge_pages_only_where_allowed(shmem_thp):
    z = ndshm.zeros(16 * MiB // 8)
    src = np.arange(16 * MiB // 8, dtype=np.float64)
    c = ndshm.from_array(src)
    f = ndshm.full((1024, 2048), 3.5, dtype=np.float64)
    assert not z.any() and np.array_equal(c, src) and (f == 3.5).all()
    for a in (z, c, f):
        expect_huge(huge_kib(address(a)), shmem_thp)


def test_small_arrays_are_left_alone(shmem_thp):
    a = ndshm.zeros(MiB // 8)
    a[:] = 1
    assert huge_kib(address(a)) == 0 and a.sum() == MiB // 8


def test_lazy_result_populated_in_parts_gets_huge_pages(shmem_thp):
    out = empty_lazy((8, 2 * MiB // 8))
    for i in range(8):
        populate(out[i])
        out[i] = i
    assert (out[:, 0] == np.arange(8)).all()
    expect_huge(huge_kib(address(out)), shmem_thp)


def _fill_and_report(a, conn) -> None:
    populate(a[4:])
    a[4:] = 7.0
    conn.send(huge_kib(address(a)))


def test_a_process_that_attaches_maps_huge_pages_too(shmem_thp):
    a = empty_lazy((8, 2 * MiB // 8))
    populate(a[:4])
    a[:4] = 1.0
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    p = ctx.Process(target=_fill_and_report, args=(a, there))
    p.start()
    try:
        assert here.poll(30)
        kib = here.recv()
    finally:
        p.join(10)
    assert p.exitcode == 0
    assert (a[:4] == 1.0).all() and (a[4:] == 7.0).all()
    expect_huge(kib, shmem_thp)


def test_named_segments_follow_their_mount_not_shmem_enabled(shmem_thp, shm_name):
    # /dev/shm here is a tmpfs whose huge= option is the kernel default
    # unless it was mounted otherwise; shmem_enabled does not govern it.
    mounts = Path("/proc/self/mountinfo").read_text()
    seg_dir = _native.segment_dir()
    huge_opt = [ln for ln in mounts.splitlines() if f" {seg_dir} " in ln and "huge=" in ln]
    a = ndshm.zeros(16 * MiB // 8, name=shm_name)
    try:
        a[:] = 2.0
        if not huge_opt:
            assert huge_kib(address(a)) == 0
    finally:
        del a
        ndshm.delete(shm_name)


def test_big_anonymous_arrays_live_in_the_private_tmpfs_only_under_never(shmem_thp):
    small, big = ndshm.zeros(MiB // 8), ndshm.zeros(4 * MiB // 8)
    assert fd_link(small).startswith("/memfd:ndshm")  # sealed, as every small one
    in_tmpfs = not fd_link(big).startswith("/memfd:")
    setting = _selected()
    assert in_tmpfs == (shmem_thp and setting == "never")
    if in_tmpfs:
        assert os.fstat(_native.view_of(big)[0].fd).st_nlink == 0  # no name anywhere
