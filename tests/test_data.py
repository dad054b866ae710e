from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from devicefit.data import (
    DataFileError,
    LatencyTable,
    data_dir,
    load_device_table,
    load_help,
    load_image_folder_tarball,
    load_latbench,
    load_mnist_idx,
    load_nb201_table,
    load_npz_images,
    random_crop_flip,
    read_latency_csv,
    to_tensor,
    write_latency_csv,
)
from devicefit.spaces import NB201Cell, all_cells

from .conftest import need_file

LATBENCH_CPU = "latency/latbench/desktop-cpu-core-i7-7820x-fp32.pickle"


# -- data directory -------------------------------------------------------------------------------
def test_data_dir_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    with pytest.raises(DataFileError, match="DEVICEFIT_DATA"):
        data_dir()
    assert data_dir(required=False) is None
    monkeypatch.setenv("DEVICEFIT_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir(tmp_path / "x", required=False) is None
    with pytest.raises(DataFileError, match="does not exist"):
        data_dir(tmp_path / "missing")
    with pytest.raises(DataFileError, match="not found"):
        load_nb201_table(data_dir=tmp_path)


# -- NB201 table ------------------------------------------------------------------------------------
def test_nb201_table_optima(nb201_table) -> None:
    assert len(nb201_table) == 15_625
    cell, value = nb201_table.best("c10_test_200ep")
    assert nb201_table.index_of(cell) == 6111 and value == pytest.approx(94.37, abs=0.01)
    assert nb201_table.best("c100_test_200ep")[1] == pytest.approx(73.51, abs=0.01)
    assert nb201_table.best("in16_val_200ep")[1] == pytest.approx(47.33, abs=0.01)
    assert nb201_table.cell_at(6111) == cell
    with pytest.raises(IndexError, match="out of range"):
        nb201_table.cell_at(15_625)
    # Failed Zen-NAS scores (-1e8 upstream) are missing, not numbers.
    assert np.nanmin(nb201_table.column("zen_c10")) > -1e7


def test_nb201_table_rejects_corrupt_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("nb201_index,arch_str,params_M\n0,|nor_conv_3x3~0|+|bogus|,0.1\n")
    with pytest.raises(DataFileError, match="bad.csv"):
        load_nb201_table(bad)
    bad.write_text("index,arch\n0,x\n")
    with pytest.raises(DataFileError, match="lacks column"):
        load_nb201_table(bad)
    bad.write_bytes(b"")
    with pytest.raises(DataFileError, match="not a readable CSV"):
        load_nb201_table(bad)
    ok = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    bad.write_text(f"nb201_index,arch_str,params_M\n0,{ok},abc\n")
    with pytest.raises(DataFileError, match="non-numeric"):
        load_nb201_table(bad)


# -- latency tables ---------------------------------------------------------------------------------
def test_latbench_cpu_missing_cells_are_the_disconnected_ones(data_root: Path) -> None:
    table = load_latbench(need_file(data_root, LATBENCH_CPU))
    assert len(table) == 15_284 and table.unit == "ms" and table.source == "latbench"
    missing = {c for c in all_cells() if c not in table}
    assert missing == {c for c in all_cells() if c.is_disconnected()}
    cell = NB201Cell((0, 0, 0, 2, 2, 4))
    assert table[cell] == pytest.approx(1.5538465976715089)  # upstream stores 0.00155... seconds
    dead = NB201Cell((0,) * 6)
    assert table.get(dead) is None
    with pytest.raises(KeyError, match="no ms value"):
        table[dead]


def test_help_table_and_device_lookup(data_root: Path) -> None:
    need_file(data_root, "latency/help/help_nb201_latency_ms.csv")
    tables = load_help(data_dir_path=data_root)
    assert {"raspi4", "pixel2", "gold_6226", "titan_rtx_256", "eyeriss", "fpga"} <= set(tables)
    assert all(len(t) == 15_625 for t in tables.values())
    assert load_device_table("raspi4", data_root).values == tables["raspi4"].values
    with pytest.raises(KeyError, match="unknown device 'nokia-3310'.*raspi4"):
        load_device_table("nokia-3310", data_root)


def test_corrupt_latbench_pickles(tmp_path: Path) -> None:
    p = tmp_path / "dev.pickle"
    p.write_bytes(b"not a pickle")
    with pytest.raises(DataFileError, match="dev.pickle"):
        load_latbench(p)
    p.write_bytes(pickle.dumps({(0, 1, 2): 0.1}))
    with pytest.raises(DataFileError, match="bad entry"):
        load_latbench(p)
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataFileError, match="expected a non-empty dict"):
        load_latbench(p)
    # Arbitrary objects are refused, not executed.
    p.write_bytes(pickle.dumps({(0, 0, 0, 1, 1, 1): Path("x")}))
    with pytest.raises(DataFileError, match="refusing"):
        load_latbench(p)
    with pytest.raises(DataFileError, match="not found"):
        load_latbench(tmp_path / "absent.pickle")


def test_latency_csv_round_trip_with_missing_cells(tmp_path: Path) -> None:
    a, b = NB201Cell((3,) * 6), NB201Cell((1, 2, 3, 4, 1, 2))
    t1 = LatencyTable("dev-a", "ms", {a: 1.5, b: 2.25})
    t2 = LatencyTable("dev-b", "ms", {a: 3.0})
    path = tmp_path / "lat.csv"
    write_latency_csv(path, [t1, t2])
    back = read_latency_csv(path)
    assert back["dev-a"].values == t1.values and back["dev-b"].values == t2.values
    assert b not in back["dev-b"]
    path.write_text("arch_str,dev\n|bad|,1.0\n")
    with pytest.raises(DataFileError, match="lat.csv"):
        read_latency_csv(path)
    path.write_text(f"arch_str,dev\n{a.to_str()},fast\n")
    with pytest.raises(DataFileError, match="non-numeric"):
        read_latency_csv(path)
    with pytest.raises(DataFileError, match="invalid value"):
        LatencyTable("dev", "ms", {a: -1.0})


# -- images -----------------------------------------------------------------------------------------
def test_npz_batches(data_root: Path) -> None:
    s = load_npz_images(need_file(data_root, "images/cifar10_train_aug_960.npz"))
    assert s.x.shape == (960, 32, 32, 3) and s.y.min() >= 0 and s.y.max() <= 9
    t = to_tensor(s.x[:64], "cifar10")
    assert t.shape == (64, 3, 32, 32) and t.dtype == torch.float32
    assert abs(float(t.mean())) < 0.5 and 0.5 < float(t.std()) < 1.5  # roughly standardized
    aug = random_crop_flip(s.x[:8], np.random.default_rng(0))
    assert aug.shape == (8, 32, 32, 3) and aug.dtype == np.uint8


def test_cifar10_tarball_and_mnist(data_root: Path) -> None:
    s = load_image_folder_tarball(need_file(data_root, "images/cifar10-jpg.tar.gz"), "test", limit_per_class=20)
    assert s.x.shape == (200, 32, 32, 3) and len(s.classes) == 10 and np.bincount(s.y).tolist() == [20] * 10
    m = load_mnist_idx(
        need_file(data_root, "images/t10k-images-idx3-ubyte.gz"),
        need_file(data_root, "images/t10k-labels-idx1-ubyte.gz"),
    )
    assert m.x.shape == (10_000, 28, 28, 1) and set(np.unique(m.y)) == set(range(10))


def test_corrupt_image_files(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(DataFileError, match="x.npz"):
        load_npz_images(p)
    np.savez(p, images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataFileError, match="'x' and 'y'"):
        load_npz_images(p)
    t = tmp_path / "imgs.tar.gz"
    t.write_bytes(gzip.compress(b"not a tar"))
    with pytest.raises(DataFileError, match="corrupt"):
        load_image_folder_tarball(t)
    idx = tmp_path / "i.idx"
    idx.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(DataFileError, match="magic|values|truncated"):
        load_mnist_idx(idx, idx)
