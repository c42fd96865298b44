"""Hostile config files (an alias bomb, deep nesting, devices and FIFOs, huge files, long
`extends:` chains) are refused at once with the file and line: exit 2, never a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from kexp.config import load_config
from kexp.config.load import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_EXTENDS_DEPTH,
    MAX_EXTENDS_FILES,
    MAX_FILE_BYTES,
    MAX_NODES,
    apply_sets,
    load_merged,
)
from kexp.errors import ConfigError
from tests.conftest import CONFIGS, REPO

BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9 if prev else ['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def _hostile_inputs(tmp_path):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "deep.yaml").write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "zero.yaml").write_text("extends: /dev/zero\n")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "fifo.yaml").write_text("extends: pipe\n")
    return {"bomb.yaml": "alias bomb", "deep.yaml": "nested more than 64",
            "zero.yaml": "character device", "fifo.yaml": "FIFO"}


# A parent process of its own, so that ru_maxrss of its children is this one command's.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run([sys.executable, "-m", "kexp.cli.app", "validate", sys.argv[1]],
                      capture_output=True, text=True, timeout=60)
print(json.dumps({"code": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout,
                  "seconds": time.perf_counter() - start,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def test_the_four_inputs_of_the_issue_exit_2_fast_in_bounded_memory(tmp_path):
    for name, message in _hostile_inputs(tmp_path).items():
        proc = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / name)],
                              capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        result = json.loads(proc.stdout)
        assert result["code"] == 2, result
        assert f"{tmp_path / name}:1:" in result["stderr"] and message in result["stderr"]
        assert "Traceback" not in result["stderr"] and result["stdout"] == ""
        assert result["max_rss_mb"] < 200, result
        # about 0.2 s on an idle machine (mostly Python's start-up); generous for a busy one
        assert result["seconds"] < 10, result


def test_the_bomb_is_refused_without_being_expanded(write):
    path = write("bomb.yaml", BOMB)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_merged(path)
    assert time.perf_counter() - start < 5
    assert f"more than {MAX_ALIAS_NODES:,} values" in str(err.value)
    assert "bomb.yaml:1:" in str(err.value)


def test_aliases_a_real_config_uses_still_work(write):
    path = write("c.yaml", """
        layer: &dense {type: Dense, units: 8, activation: relu}
        model:
          layers: [*dense, *dense, {<<: *dense, units: 2, activation: softmax}]
        """)
    loaded = load_merged(path)
    layers = loaded.data["model"]["layers"]
    assert layers[0] == layers[1] == {"type": "Dense", "units": 8, "activation": "relu"}
    assert layers[2] == {"type": "Dense", "units": 2, "activation": "softmax"}
    assert layers[0] is not layers[1]  # a tree: changing one (--set) leaves the other alone
    # a merged key points at the anchored line, an explicit one at its own
    assert loaded.sources.where(("model", "layers", 2, "type")).endswith("c.yaml:1:16")
    assert loaded.sources.where(("model", "layers", 2, "units")).endswith("c.yaml:3:41")


def test_a_recursive_alias_is_refused(write):
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels"):
        load_merged(write("c.yaml", "a: &a [*a]\n"))


@pytest.mark.parametrize("depth, ok", [(MAX_DEPTH, True), (MAX_DEPTH + 1, False)])
def test_nesting_depth_bound(write, depth, ok):
    # the root mapping is one level, x's lists the others
    path = write("c.yaml", "x: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n")
    if ok:
        value, levels = load_merged(path).data["x"], 1
        while value:
            value, levels = value[0], levels + 1
        assert levels == depth - 1
    else:
        with pytest.raises(ConfigError, match=r"c.yaml:1:\d+: the YAML is nested more than 64"):
            load_merged(path)


def test_block_style_nesting_is_bounded_too(write):
    text = "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n"
    with pytest.raises(ConfigError, match="nested more than 64"):
        load_merged(write("c.yaml", text))


def test_a_file_larger_than_the_bound(write):
    path = write("big.yaml", "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"big.yaml is larger than 2 MB"):
        load_merged(path)


def test_a_file_of_too_many_values_is_refused_early(write):
    text = "".join(f"k{i}: [1, 2, {{a: b}}]\n" for i in range(MAX_NODES // 5 + 10))
    assert len(text) < MAX_FILE_BYTES
    start = time.process_time()
    with pytest.raises(ConfigError, match=f"more than {MAX_NODES:,} values"):
        load_merged(write("many.yaml", text))
    assert time.process_time() - start < 20  # about 1.5 s of CPU; linear, not quadratic
    # below the bound, every key is read (and in linear time: 4,000 keys in well under 5 s)
    text = "".join(f"k{i}: [1, 2, {{a: b}}]\n" for i in range(4000))
    start = time.process_time()
    assert len(load_merged(write("ok.yaml", text)).data) == 4000
    assert time.process_time() - start < 5


def test_special_files_are_refused_before_they_are_opened(tmp_path, write):
    os.mkfifo(tmp_path / "pipe.yaml")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.yaml"))
    try:
        for target, what in (("pipe.yaml", "FIFO"), ("sock.yaml", "socket"),
                             ("/dev/null", "character device")):
            path = write("c.yaml", f"seed: 1\nextends: {target}\n")
            with pytest.raises(ConfigError) as err:
                load_merged(path)
            assert what in str(err.value) and "c.yaml:2:1:" in str(err.value)
        with pytest.raises(ConfigError, match="pipe.yaml is a FIFO"):
            load_merged(tmp_path / "pipe.yaml")
    finally:
        sock.close()


@pytest.mark.parametrize("yaml_text, config_path", [
    ("data: {type: npz, path: pipe}", "data.path"),
    ("data: {type: csv, path: x.csv, test: {type: npz, path: /dev/zero}}", "data.test.path"),
    ("model: {type: sequential, base: /dev/zero}", "model.base"),
    ("plugins: [pipe.py]", "plugins[0]"),
])
def test_special_data_model_and_plugin_paths(tmp_path, write, yaml_text, config_path):
    os.mkfifo(tmp_path / "pipe")
    os.mkfifo(tmp_path / "pipe.py")
    path = write("c.yaml", yaml_text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "c.yaml:1:" in str(err.value) and f"{config_path}:" in str(err.value)
    assert "expected a regular file or a directory" in str(err.value)


def test_special_paths_from_the_command_line(tmp_path, write):
    os.mkfifo(tmp_path / "pipe.py")
    path = write("c.yaml", "seed: 1\n")
    with pytest.raises(ConfigError, match=r"--plugin .*pipe.py: plugins\[0\]: .* FIFO"):
        load_config(path, plugins=[str(tmp_path / "pipe.py")])
    with pytest.raises(ConfigError, match=r"--set data.path=/dev/zero: data.path: .* device"):
        load_config(path, sets=["data.path=/dev/zero"])


def test_extends_chain_bound(write):
    for i in range(MAX_EXTENDS_DEPTH + 1):
        write(f"c{i}.yaml", f"extends: c{i + 1}.yaml\nseed: {i}\n")
    write(f"c{MAX_EXTENDS_DEPTH + 1}.yaml", "seed: 99\n")
    with pytest.raises(ConfigError, match=f"a chain of more than {MAX_EXTENDS_DEPTH} files"):
        load_merged(write("c0.yaml", "extends: c1.yaml\n"))
    # the longest allowed chain loads: ok.yaml, c3.yaml ... c17.yaml
    assert load_merged(write("ok.yaml", "extends: c3.yaml\n")).data["seed"] == 3


def test_extends_fan_out_bound(write):
    # each level extends the next twice: 2^10 loads without a bound on the files read
    for i in range(10):
        write(f"d{i}.yaml", f"extends: [d{i + 1}.yaml, d{i + 1}.yaml]\n")
    write("d10.yaml", "seed: 1\n")
    with pytest.raises(ConfigError, match=f"more than {MAX_EXTENDS_FILES} files in all"):
        load_merged(write("d0.yaml", "extends: [d1.yaml, d1.yaml]\n"))


@pytest.mark.parametrize("text, message", [
    ("a: ._\n", "cannot read '._'"),
    ("a: " + "1" * 5000 + "\n", "cannot read '1111"),
    ("? [a]\n: 1\n", "a key must be a name, received a list"),
    ("a: {<<: 3}\n", "`<<` merges a mapping"),
    ("extends: \"a\\0b\"\n", "NUL"),
    ("extends: \"\\ud800\"\n", "surrogates not allowed"),
    ("a: \"\\x07\"\nb: [\n", "invalid YAML"),
])
def test_odd_scalars_and_keys_are_config_errors(write, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_merged(write("c.yaml", text))


def test_a_date_is_text(write):
    assert load_merged(write("c.yaml", "name: 2026-12-01\n")).data == {"name": "2026-12-01"}


def test_set_errors_name_the_set_argument(write):
    loaded = load_merged(write("c.yaml", "seed: 1\n"))
    apply_sets(loaded, ["nosuch.key=1"])
    assert loaded.sources.where(("nosuch",)) == "--set nosuch.key=1"
    path = CONFIGS / "digits_mlp.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(path, sets=["foo.bar=1"])
    assert str(err.value).startswith("config error: --set foo.bar=1: foo: unknown key")


# --------------------------------------------------------------------------- data files


def _npz_claiming(path, shape):
    import io
    import zipfile

    import numpy as np

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        member, {"descr": "<f4", "fortran_order": False, "shape": shape})
    member.write(np.zeros(8, "<f4").tobytes())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member.getvalue())
        archive.writestr("y.npy", member.getvalue())


def test_an_npz_header_claiming_a_huge_shape_is_refused(tmp_path):
    from kexp.data.files import load_npz
    from kexp.errors import DataError

    path = tmp_path / "lies.npz"
    _npz_claiming(path, (10**6, 10**6))
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_npz(path, "x", "y")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "lies.npz" in message and "'x'" in message and "(1000000, 1000000)" in message
    assert "4,000,000,000,000 bytes" in message


def test_a_csv_line_of_many_megabytes_is_refused(tmp_path):
    from kexp.data.files import MAX_LINE_BYTES, load_csv
    from kexp.errors import DataError

    path = tmp_path / "wide.csv"
    with open(path, "w") as file:
        file.write("a,b\n1,2\n3,")
        for _ in range(MAX_LINE_BYTES // 2**20 + 1):
            file.write("9" * 2**20)
        file.write("\n")
    with pytest.raises(DataError, match=r"wide.csv: line 3 is longer than 16 MB"):
        load_csv(path, "a", "b")
    from kexp.data.records import csv_stream

    with pytest.raises(DataError, match=r"wide.csv: line 3 is longer than 16 MB"):
        csv_stream(str(path), "a", "b")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_an_image_claiming_absurd_dimensions_is_not_decoded(tmp_path):
    """Its header is refused when read, and ``read_image`` decodes an empty string in its
    place (the header check kexp gives a refused file matches no file)."""
    import tensorflow as tf

    from kexp.data.folders import header_checks, read_image
    from kexp.data.image_headers import MAX_IMAGE_PIXELS, read_header

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(100_000, 100_000))
    header = read_header(str(bomb))
    assert header.pixels == 10**10
    assert header.refusal.startswith(f"its header claims more than {MAX_IMAGE_PIXELS:,} pixels")
    (end,), (digest,) = header_checks([str(bomb)], {})
    with pytest.raises(tf.errors.InvalidArgumentError, match="Input is empty"):
        read_image(tf.constant(str(bomb)), end, digest, image_size=(8, 8), channels=3)


def test_a_decompression_bomb_in_an_image_directory_names_the_file(kexp, tmp_path):
    from tests.filedata import image_folder
    from tests.test_file_data import CONVNET

    image_folder(tmp_path / "images", per_class=8)
    bomb = tmp_path / "images" / "squares" / "005.png"
    bomb.write_bytes(_png_claiming(100_000, 100_000))
    (tmp_path / "convnet.yaml").write_text(CONVNET)
    result = kexp("train", tmp_path / "convnet.yaml", "--runs-dir", tmp_path / "runs",
                  "--set", "train.epochs=1")
    assert result.exit_code == 1, result.output
    assert ("squares/005.png: cannot read this file (its header claims more than 89,478,485 "
            "pixels") in result.stderr
    assert "Traceback" not in result.stderr
