"""Tests for kexp.data: built-in datasets, npz/csv reading and their errors, the Keras
datasets' offline routes, assembling splits, and checking data against a model."""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kexp.data import datasets, keras_datasets
from kexp.data.checks import check_against_model, input_spec
from kexp.data.splits import Split, Splits, assemble
from kexp.errors import DataError
from kexp.registry import DATASETS

FIXTURES = Path(__file__).parent / "fixtures" / "data"
AUTO_MPG = FIXTURES / "auto-mpg-head.data"  # header + 10 cars + the "?" horsepower row (12)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# --------------------------------------------------------------------------- registry


def test_importing_datasets_loads_nothing_heavy():
    code = (
        "import sys, kexp.data.datasets\n"
        "print(sorted(m for m in ('numpy', 'tensorflow', 'keras', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_builtins_are_registered_with_their_config_keys():
    for name in ("digits", "synthetic_tickets", "mnist", "fashion_mnist", "cifar10", "imdb",
                 "npz", "csv"):
        assert DATASETS.get(name).origin == "kexp"
    assert DATASETS.get("npz").required == ("path", "features")
    assert "seed" in DATASETS.get("synthetic_tickets").params
    assert set(DATASETS.get("mnist").params) == {"path", "flatten", "normalize"}


# --------------------------------------------------------------------------- generated


def test_digits_are_scaled_rows_with_integer_labels():
    splits = datasets.digits()
    assert splits.train.x.shape == (1797, 64) and splits.train.x.dtype == np.float32
    assert splits.train.x.min() == 0.0 and splits.train.x.max() == 1.0
    assert splits.train.y.dtype == np.int64 and set(splits.train.y) == set(range(10))
    assert splits.validation is None and splits.test is None
    images = datasets.digits(flatten=False, normalize=False).train.x
    assert images.shape == (1797, 8, 8) and images.max() == 16.0


def test_digits_equal_scikit_learns_load_digits_without_importing_it(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from kexp.data import datasets\n"
        "x = datasets.digits(normalize=False).train\n"
        "print('sklearn' in sys.modules)\n"
        "np.save(sys.argv[1], np.column_stack([x.x, x.y]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "digits.npy")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rows = np.load(tmp_path / "digits.npy")
    np.testing.assert_array_equal(rows[:, :-1], bunch.data)
    np.testing.assert_array_equal(rows[:, -1], bunch.target)


def test_synthetic_tickets_match_the_chapter_and_are_seeded():
    splits = datasets.synthetic_tickets(num_samples=20, vocabulary_size=50, num_tags=7,
                                        num_departments=3, seed=5)
    x, y = splits.train.x, splits.train.y
    assert {k: v.shape for k, v in x.items()} == {
        "title": (20, 50), "text_body": (20, 50), "tags": (20, 7)}
    assert all(set(np.unique(v)) <= {0.0, 1.0} for v in x.values())
    assert y["priority"].shape == (20, 1) and 0 <= y["priority"].min() <= y["priority"].max() <= 1
    assert y["department"].shape == (20, 3) and (y["department"].sum(axis=1) == 1).all()
    assert len(splits.train) == 20
    again = datasets.synthetic_tickets(num_samples=20, vocabulary_size=50, num_tags=7,
                                       num_departments=3, seed=5)
    other = datasets.synthetic_tickets(num_samples=20, vocabulary_size=50, num_tags=7,
                                       num_departments=3, seed=6)
    assert np.array_equal(again.train.x["title"], x["title"])
    assert not np.array_equal(other.train.x["title"], x["title"])


# --------------------------------------------------------------------------- npz


@pytest.fixture
def tickets_npz(tmp_path):
    path = tmp_path / "tickets.npz"
    rng = np.random.default_rng(0)
    np.savez(path, title=rng.random((6, 4)), tags=rng.random((6, 2)),
             label=np.arange(6, dtype=np.uint8), score=rng.random(6))
    return path


def test_npz_single_list_and_mapping_selections(tickets_npz):
    one = datasets.npz(path=str(tickets_npz), features="title", targets="label").train
    assert one.x.shape == (6, 4) and one.x.dtype == np.float32
    assert one.y.dtype == np.int64  # class labels stay integers
    named = datasets.npz(path=str(tickets_npz), features=["title", "tags"],
                         targets={"priority": "score"}).train
    assert set(named.x) == {"title", "tags"} and named.y["priority"].dtype == np.float32
    assert named.source.endswith("tickets.npz")
    no_targets = datasets.npz(path=str(tickets_npz), features={"text": "title"}).train
    assert list(no_targets.x) == ["text"] and no_targets.y is None


def test_npz_unknown_array_lists_the_available_ones(tickets_npz):
    with pytest.raises(DataError) as err:
        datasets.npz(path=str(tickets_npz), features="titel", targets="label")
    message = str(err.value)
    assert "tickets.npz" in message and "'titel'" in message
    assert "label, score" in message or "score" in message
    assert "Did you mean 'title'?" in message


def test_npz_missing_empty_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz: file not found"):
        datasets.npz(path=str(tmp_path / "nope.npz"), features="x")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npz: the file is empty"):
        datasets.npz(path=str(tmp_path / "empty.npz"), features="x")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"text\.npz: not a readable \.npz"):
        datasets.npz(path=str(tmp_path / "text.npz"), features="x")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(DataError, match="holds no arrays"):
        datasets.npz(path=str(tmp_path / "none.npz"), features="x")


def test_npz_sample_counts_types_and_values_are_checked(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.ones((5, 2)), y=np.ones(4), names=np.array(["a"] * 5),
             ragged=np.array([[1], [1, 2]], dtype=object),
             nan=np.array([[0.0], [1.0], [np.nan], [np.nan], [0.0]]),
             inf=np.array([0.0, 1.0, 2.0, np.inf, 0.0]))
    with pytest.raises(DataError, match=r"bad\.npz: arrays have different numbers of samples: "
                                        r"x 5, y 4"):
        datasets.npz(path=str(path), features="x", targets="y")
    with pytest.raises(DataError, match=r"array 'names' holds <U1 values; features must be "):
        datasets.npz(path=str(path), features="names")
    with pytest.raises(DataError, match=r"array 'ragged' cannot be read without pickle"):
        datasets.npz(path=str(path), features="ragged")
    # Non-finite values are warned about, not refused: training fails on them (exit 1).
    datasets.npz(path=str(path), features="nan")
    assert "bad.npz: array 'nan' (features) has a NaN value at row 2" in capsys.readouterr().err
    datasets.npz(path=str(path), features="x", targets="inf")
    assert "array 'inf' (targets) has an infinite value at row 3" in capsys.readouterr().err


# --------------------------------------------------------------------------- csv


@pytest.fixture
def cars_csv(tmp_path):
    return write(tmp_path / "cars.csv", """
        name,cylinders,weight,mpg,origin
        "chevrolet, malibu",8,3504,18.0,1
        buick,8,3693,15.0,1

        toyota,4,2372,24.0,3
        """)


def test_csv_default_features_are_numeric_non_target_columns(cars_csv):
    split = datasets.csv(path=str(cars_csv), targets="mpg").train
    assert split.x.shape == (3, 3) and split.x.dtype == np.float32  # cylinders, weight, origin
    assert split.x[2].tolist() == [4.0, 2372.0, 3.0]
    assert split.y.tolist() == [18.0, 15.0, 24.0] and split.y.dtype == np.float32


def test_csv_lists_are_one_matrix_and_mappings_name_model_inputs(cars_csv):
    split = datasets.csv(path=str(cars_csv), features=["weight", "cylinders"],
                         targets=["mpg", "origin"]).train
    assert split.x.shape == (3, 2) and split.x[2].tolist() == [2372.0, 4.0]  # list order
    assert split.y.shape == (3, 2) and split.y[:, 1].tolist() == [1.0, 1.0, 3.0]
    named = datasets.csv(path=str(cars_csv), features={"c": "cylinders", "w": ["weight"]},
                         targets={"mpg": "mpg", "origin": "origin"}).train
    assert {k: v.shape for k, v in named.x.items()} == {"c": (3, 1), "w": (3, 1)}
    assert named.y["origin"].dtype == np.int64 and named.y["mpg"].dtype == np.float32
    stacked = datasets.csv(path=str(cars_csv), features={"engine": ["cylinders", "weight"]},
                           targets="origin").train
    assert stacked.x["engine"].shape == (3, 2) and stacked.y.tolist() == [1, 1, 3]


def test_csv_whitespace_file_with_quoted_text_column():
    split = datasets.csv(path=str(AUTO_MPG), delimiter=None, targets="mpg",
                         drop_missing=True).train
    assert split.x.shape == (10, 7)  # car_name is text: left out of the default features
    assert split.x[0].tolist() == [8, 307, 130, 3504, 12, 70, 1]
    assert datasets.csv(path=str(AUTO_MPG), delimiter=" ", features="weight",
                        targets="origin").train.y.dtype == np.int64


def test_csv_missing_value_names_file_row_and_column_with_a_hint():
    with pytest.raises(DataError) as err:
        datasets.csv(path=str(AUTO_MPG), delimiter=None, targets="mpg")
    message = str(err.value)
    assert "auto-mpg-head.data: row 12, column 'horsepower': missing value '?'" in message
    assert "drop_missing: true" in message


def test_csv_non_numeric_used_column_names_row_and_column():
    with pytest.raises(DataError) as err:
        datasets.csv(path=str(AUTO_MPG), delimiter=None, features=["weight", "car_name"],
                     targets="mpg")
    assert ("auto-mpg-head.data: row 2, column 'car_name': 'chevrolet chevelle malibu' is "
            "not a number") in str(err.value)


def test_csv_unknown_column_suggests_the_closest(cars_csv):
    with pytest.raises(DataError) as err:
        datasets.csv(path=str(cars_csv), features="wieght", targets="mpg")
    message = str(err.value)
    assert "cars.csv: features name an unknown column 'wieght'" in message
    assert "name, cylinders, weight, mpg, origin" in message
    assert "Did you mean 'weight'?" in message
    with pytest.raises(DataError, match="targets name an unknown column 'mpgg'"):
        datasets.csv(path=str(cars_csv), targets="mpgg")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", r"bad\.csv: the file is empty"),
        ("a,b\n", r"bad\.csv: the file has a header but no data rows"),
        ("a,b\n1,2\n3\n", r"bad\.csv: row 3 has 1 cells; expected 2 \(as in the header\)"),
        ("a,b\n1,2\n3,x\n", r"bad\.csv: row 3, column 'b': 'x' is not a number"),
        ("a,b\n1,2\n3,inf\n", r"bad\.csv: row 3, column 'b': infinite value 'inf'"),
        ("a,b\n1,\n", r"bad\.csv: row 2, column 'b': missing value ''"),
        ("a,a\n1,2\n", r"bad\.csv: the header names columns more than once: a"),
    ],
)
def test_csv_errors_name_the_file_and_row(tmp_path, text, pattern):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=pattern):
        datasets.csv(path=str(tmp_path / "bad.csv"), features=["a", "b"])


def test_csv_missing_file_and_rows_left_after_dropping(tmp_path):
    with pytest.raises(DataError, match=r"gone\.csv: file not found"):
        datasets.csv(path=str(tmp_path / "gone.csv"))
    write(tmp_path / "holes.csv", "a,b\n1,?\n2,\n")
    with pytest.raises(DataError, match="every row has a missing value"):
        datasets.csv(path=str(tmp_path / "holes.csv"), targets="b", drop_missing=True)


def test_csv_without_header_names_columns_by_position(tmp_path):
    write(tmp_path / "plain.tsv", "1\t2.5\t0\n3\t4.5\t1\n")
    split = datasets.csv(path=str(tmp_path / "plain.tsv"), delimiter="\t", header=False,
                         features=[0, 1], targets=2).train
    assert split.x.tolist() == [[1.0, 2.5], [3.0, 4.5]] and split.y.tolist() == [0, 1]


# --------------------------------------------------------------------------- Keras datasets


def fake_mnist(path: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
             y_train=np.arange(n, dtype=np.uint8) % 10,
             x_test=np.full((2, 28, 28), 255, np.uint8), y_test=np.array([1, 2], np.uint8))
    return path


def test_mnist_from_a_local_path(tmp_path):
    splits = datasets.mnist(path=str(fake_mnist(tmp_path / "mnist.npz")), flatten=True)
    assert splits.train.x.shape == (6, 784) and splits.train.x.dtype == np.float32
    assert splits.train.x.max() <= 1.0 and splits.test.x.max() == 1.0
    assert splits.train.y.dtype == np.int64 and splits.test.y.tolist() == [1, 2]
    raw = datasets.mnist(path=str(tmp_path / "mnist.npz"), normalize=False)
    assert raw.train.x.shape == (6, 28, 28) and raw.test.x.max() == 255.0


def test_missing_path_fails_at_once_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_datasets, "_get_file", pytest.fail)  # never download
    with pytest.raises(DataError) as err:
        datasets.mnist(path=str(tmp_path / "mnist.npz"))
    assert "mnist.npz: file not found" in str(err.value)
    assert "mnist.npz (a file)" in str(err.value)


def test_keras_cache_is_used_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_datasets, "_get_file", pytest.fail)
    (tmp_path / "datasets").mkdir()
    fake_mnist(tmp_path / "datasets" / "mnist.npz", n=3)
    assert len(datasets.mnist().train) == 3


def test_failed_download_explains_how_to_get_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    seen = {}

    def offline(download, home):
        seen["timeout"] = __import__("socket").getdefaulttimeout()
        raise Exception("URL fetch failure on https://...: None -- [Errno -3] no network")

    monkeypatch.setattr(keras_datasets, "_get_file", offline)
    with pytest.raises(DataError) as err:
        datasets.mnist()
    message = str(err.value)
    assert seen["timeout"] == keras_datasets.DOWNLOAD_TIMEOUT
    assert "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in message
    assert str(tmp_path / "datasets" / "mnist.npz") in message
    assert "no network" in message and "path" in message


def test_corrupt_keras_file_is_a_data_error(tmp_path):
    (tmp_path / "mnist.npz").write_text("oops")
    with pytest.raises(DataError, match=r"mnist\.npz: not a readable Keras dataset"):
        datasets.mnist(path=str(tmp_path / "mnist.npz"))
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(DataError, match="lacks the arrays x_train, y_train, x_test, y_test"):
        datasets.mnist(path=str(tmp_path / "other.npz"))


def test_fashion_mnist_from_a_directory_of_idx_files(tmp_path):
    def idx(name: str, header: int, payload: np.ndarray) -> None:
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\0" * header + payload.astype(np.uint8).tobytes())

    idx("train-labels-idx1-ubyte.gz", 8, np.array([1, 2, 3]))
    idx("train-images-idx3-ubyte.gz", 16, np.zeros((3, 28, 28)))
    idx("t10k-labels-idx1-ubyte.gz", 8, np.array([4]))
    idx("t10k-images-idx3-ubyte.gz", 16, np.full((1, 28, 28), 255))
    splits = datasets.fashion_mnist(path=str(tmp_path))
    assert splits.train.x.shape == (3, 28, 28) and splits.train.y.tolist() == [1, 2, 3]
    assert splits.test.x.max() == 1.0


def test_cifar10_from_the_tar_gz(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
            batch = {b"data": np.full((2, 3072), i, np.uint8), b"labels": [i, i]}
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    splits = datasets.cifar10(path=str(archive), normalize=False)
    assert splits.train.x.shape == (10, 32, 32, 3) and splits.train.y.shape == (10, 1)
    assert splits.test.y.ravel().tolist() == [5, 5] and splits.test.x.max() == 5.0


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(print))
    with pytest.raises(DataError, match="not a readable CIFAR-10 copy"):
        datasets.cifar10(path=str(tmp_path))


@pytest.fixture
def imdb_npz(tmp_path):
    path = tmp_path / "imdb.npz"
    reviews = np.empty(2, dtype=object)
    reviews[:] = [[1, 5, 9000], [2]]
    np.savez(path, x_train=reviews, y_train=np.array([1, 0]), x_test=reviews[:1],
             y_test=np.array([1]))
    return path


def test_imdb_multi_hot_and_sequences(imdb_npz):
    hot = datasets.imdb(path=str(imdb_npz), num_words=10)
    # Keras's indexing: 1 starts a review, words shift by 3, rare words become 2.
    assert hot.train.x.shape == (2, 10) and hot.train.x.dtype == np.float32
    assert np.flatnonzero(hot.train.x[0]).tolist() == [1, 2, 4, 8]
    assert np.flatnonzero(hot.train.x[1]).tolist() == [1, 5]
    seqs = datasets.imdb(path=str(imdb_npz), num_words=None, mode="sequences", maxlen=3)
    assert seqs.train.x.tolist() == [[4, 8, 9003], [0, 1, 5]]
    assert seqs.test.y.tolist() == [1]


# --------------------------------------------------------------------------- assemble


def numbered(n: int, source: str = "numbers") -> Splits:
    return Splits(train=Split(np.arange(n, dtype=np.float32)[:, None], np.arange(n), source))


def test_validation_split_is_seeded_and_disjoint():
    a = assemble(numbered(50), validation_split=0.2, seed=3)
    b = assemble(numbered(50), validation_split=0.2, seed=3)
    c = assemble(numbered(50), validation_split=0.2, seed=4)
    assert len(a.train) == 40 and len(a.validation) == 10
    assert np.array_equal(a.validation.y, b.validation.y)
    assert not np.array_equal(a.validation.y, c.validation.y)
    assert sorted([*a.train.y, *a.validation.y]) == list(range(50))
    assert (np.diff(a.validation.y) > 0).all()  # file order kept within each part
    assert "numbers" in a.validation.source


def test_validation_and_test_datasets_and_a_kept_test_split():
    main = numbered(10)
    main.test = Split(np.zeros((2, 1), np.float32), np.zeros(2), "own test")
    val = numbered(4, "val.npz")
    result = assemble(main, validation=val, seed=0)
    assert result.validation.source == "val.npz" and result.test.source == "own test"
    other = Splits(train=Split(np.zeros((1, 1)), None, "t"), test=Split(np.zeros((3, 1)), None,
                                                                         "mnist test"))
    assert assemble(main, test=other).test.source == "mnist test"
    with pytest.raises(DataError, match="leaves no validation samples"):
        assemble(numbered(3), validation_split=0.1)


# --------------------------------------------------------------------------- checks


@pytest.fixture
def ticket_model():
    import keras

    keras.backend.clear_session()
    title = keras.Input(shape=(6,), name="title")
    tags = keras.Input(shape=(3,), name="tags")
    features = keras.layers.Concatenate()([title, tags])
    priority = keras.layers.Dense(1, name="priority")(features)
    department = keras.layers.Dense(4, name="department")(features)
    return keras.Model([title, tags], [priority, department])


def tickets(n: int = 5, **x_widths) -> Splits:
    widths = x_widths or {"title": 6, "tags": 3}
    x = {name: np.zeros((n, w), np.float32) for name, w in widths.items()}
    y = {"priority": np.zeros((n, 1), np.float32), "department": np.zeros((n, 4), np.float32)}
    return Splits(train=Split(x, y, "tickets.npz"))


def test_matching_data_passes_and_input_spec_gives_sample_shapes(ticket_model):
    check_against_model(tickets(), ticket_model)
    assert input_spec(tickets()) == {"title": (6,), "tags": (3,)}
    assert input_spec(numbered(4)) == (1,)


def test_input_names_are_compared_listing_both_sides(ticket_model):
    with pytest.raises(DataError) as err:
        check_against_model(tickets(title=6, body=3), ticket_model)
    message = str(err.value)
    assert "train data (tickets.npz)" in message
    assert "data has inputs [title, body], the model expects [title, tags]" in message
    assert "missing [tags]" in message and "not in the model [body]" in message


def test_output_names_and_single_arrays_are_checked(ticket_model):
    splits = tickets()
    splits.train.y = {"priority": splits.train.y["priority"]}
    with pytest.raises(DataError, match=r"data has outputs \[priority\], the model expects "
                                        r"\[priority, department\]"):
        check_against_model(splits, ticket_model)
    splits.train.x = np.zeros((5, 9), np.float32)
    with pytest.raises(DataError, match=r"features are a single array, but the model has "
                                        r"inputs \[title, tags\]"):
        check_against_model(splits, ticket_model)


def test_feature_shapes_are_checked_per_input(ticket_model):
    splits = tickets(title=7, tags=3)
    splits.validation = tickets(title=6, tags=3).train
    with pytest.raises(DataError) as err:
        check_against_model(splits, ticket_model)
    assert ("model input 'title' takes samples of shape (6,), the data's samples have "
            "shape (7,)") in str(err.value)


def test_sample_counts_must_agree(ticket_model):
    splits = tickets()
    splits.validation = Split({"title": np.zeros((3, 6)), "tags": np.zeros((3, 3))},
                              {"priority": np.zeros((2, 1)), "department": np.zeros((3, 4))},
                              "val.npz")
    with pytest.raises(DataError, match=r"validation data \(val\.npz\): features and targets "
                                        r"have different numbers of samples"):
        check_against_model(splits, ticket_model)


def test_single_input_models_sequential_and_graphless_models():
    import keras

    keras.backend.clear_session()
    inp = keras.Input(shape=(None, 2), name="series")
    functional = keras.Model(inp, keras.layers.Dense(1, name="out")(inp))
    ok = Splits(train=Split({"series": np.zeros((4, 9, 2))}, np.zeros((4, 9, 1)), "s"))
    check_against_model(ok, functional)  # None matches any length; a matching key is fine
    check_against_model(Splits(train=Split(np.zeros((4, 9, 2)), None, "s")), functional)

    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    check_against_model(Splits(train=Split(np.zeros((4, 3)), np.zeros(4))), sequential)
    check_against_model(Splits(train=Split(np.zeros((4,)), np.zeros(4))),
                        keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    with pytest.raises(DataError, match="a Sequential model takes one array"):
        check_against_model(Splits(train=Split({"a": np.zeros((4, 3))}, np.zeros(4))),
                            sequential)
    with pytest.raises(DataError, match=r"takes samples of shape \(3,\).*\(5,\)"):
        check_against_model(Splits(train=Split(np.zeros((4, 5)), np.zeros(4))), sequential)

    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    check_against_model(Splits(train=Split({"anything": np.zeros((4, 5))}, None)), unbuilt)
    with pytest.raises(DataError, match="different numbers of samples"):
        check_against_model(Splits(train=Split(np.zeros((4, 5)), np.zeros(3))), unbuilt)
