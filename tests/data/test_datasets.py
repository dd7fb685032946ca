import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from robustvision.data import create_dataset, list_datasets
from robustvision.registry import UnknownNameError


def check_contract(ds, channels=None):
    x, y = ds.tensors()
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.dim() == 4 and x.shape[0] == y.shape[0] == len(ds)
    assert x.shape[-1] == x.shape[-2] == ds.image_size
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes
    if channels:
        assert x.shape[1] == channels == ds.channels
    img, label = ds[0]
    assert img.shape == x.shape[1:] and isinstance(label, int)


def test_registry_lists_every_dataset():
    assert set(list_datasets()) >= {"digits", "mnist", "cifar10", "imagefolder"}
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        create_dataset("digit")


def test_digits_split_is_seeded_and_disjoint():
    tr, te = create_dataset("digits", "train"), create_dataset("digits", "test")
    check_contract(tr, 3)
    check_contract(te, 3)
    assert len(tr) + len(te) == 1797 and tr.image_size == 32
    again = create_dataset("digits", "test")
    assert torch.equal(again.tensors()[0], te.tensors()[0])
    other = create_dataset("digits", "test", seed=1)
    assert not torch.equal(other.tensors()[1], te.tensors()[1])
    # every class is present in both splits (stratified)
    assert set(te.tensors()[1].tolist()) == set(range(10))


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_mnist_from_written_idx(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (12, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(12) % 10)
    ds = create_dataset("mnist", "test", root=tmp_path)
    check_contract(ds, 1)
    assert ds.tensors()[1].tolist()[:3] == [0, 1, 2]
    rgb = create_dataset("mnist", "test", root=tmp_path, rgb=True, image_size=32)
    check_contract(rgb, 3)


def test_mnist_errors(tmp_path):
    with pytest.raises(ValueError, match="needs --root"):
        create_dataset("mnist", "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_dataset("mnist", "test", root=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        create_dataset("mnist", "test", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 28, 28) + b"x")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x01" * 5)
    with pytest.raises(ValueError, match="truncated"):
        create_dataset("mnist", "test", root=tmp_path)


def test_imagefolder_skips_corrupt_files_with_a_warning(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = create_dataset("imagefolder", root=tmp_path, image_size=24)
    check_contract(ds, 3)
    assert len(ds) == 6 and ds.classes == ["cat", "dog"]
    assert ds.skipped and ds.skipped[0][0].endswith("broken.jpg")


def test_imagefolder_flat_with_labels_csv(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((30, 30, 3), 50 * i, np.uint8)).save(tmp_path / f"im{i}.jpg")
    (tmp_path / "labels.csv").write_text(
        "filename,class_index,wnid\n" + "".join(f"im{i}.jpg,{i * 3},n{i}\n" for i in range(4))
    )
    ds = create_dataset("imagefolder", root=tmp_path, num_classes=20)
    check_contract(ds, 3)
    assert ds.num_classes == 20 and ds.tensors()[1].tolist() == [0, 3, 6, 9] and ds.classes[3] == "n1"


def test_cifar10_pickled_batches(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 256, (7, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": data, "labels": list(range(7))}, fh)
    ds = create_dataset("cifar10", "test", root=tmp_path)
    check_contract(ds, 3)
    assert ds.classes[0] == "airplane" and len(ds) == 7
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        create_dataset("cifar10", "train", root=folder)


@pytest.mark.shared_data
def test_shared_mnist(shared_data):
    ds = create_dataset("mnist", "test", root=shared_data / "mnist")
    check_contract(ds, 1)
    assert len(ds) == 10000 and ds.tensors()[1][:5].tolist() == [7, 2, 1, 0, 4]


@pytest.mark.shared_data
def test_shared_cifar10_tree(shared_data):
    ds = create_dataset("cifar10", "test", root=shared_data / "cifar10_test_jpg")
    check_contract(ds, 3)
    assert len(ds) == 500 and ds.image_size == 32


@pytest.mark.shared_data
def test_shared_imagenet_samples(shared_data):
    ds = create_dataset("imagefolder", root=shared_data / "imagenet_samples", image_size=64, num_classes=1000)
    check_contract(ds, 3)
    assert len(ds) == 100 and ds.num_classes == 1000
