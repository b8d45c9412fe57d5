"""An exported model is loaded only as it was exported (issue 21): ``ropenope.json`` records
the sha256 of every file, and the MLflow loader (workers/hf/remote/mlflow_pyfunc.py, what
``mlflow.pyfunc.load_model`` runs for a registered version) refuses a changed, added or
missing file by name, and runs the folder's own modeling code only when the caller passes
``trust_remote_code`` explicitly."""

from __future__ import annotations

import hashlib
import json

import pytest
from test_hf_export import export, preset

from workers.hf.export import INFO_NAME
from workers.hf.remote.mlflow_pyfunc import UntrustedModel, _load_pyfunc

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    result, _ = export(preset("rope"), tmp_path_factory.mktemp("stock"))
    return result.out_dir


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    result, _ = export(preset("gemma3_like"), tmp_path_factory.mktemp("remote"), remote_code=True)
    assert result.remote_code
    return result.out_dir


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "copy")


def test_export_records_the_sha256_of_every_file(stock, remote):
    for folder in (stock, remote):
        recorded = json.loads((folder / INFO_NAME).read_text())["sha256"]
        files = {p.name for p in folder.iterdir() if p.is_file()} - {INFO_NAME}
        assert set(recorded) == files and "model.safetensors" in files
        for name, digest in recorded.items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert "modeling_ropenope.py" in json.loads((remote / INFO_NAME).read_text())["sha256"]


def test_loader_refuses_a_changed_added_or_missing_file_by_name(stock, tmp_path):
    generator = _load_pyfunc(str(stock))
    assert isinstance(generator.predict(["def "], params={"max_new_tokens": 2})[0], str)

    weights = _copy(stock, tmp_path / "w") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(UntrustedModel, match=r"model\.safetensors: sha256 .* differs"):
        _load_pyfunc(str(weights.parent))

    added = _copy(stock, tmp_path / "a")
    (added / "sitecustomize.py").write_text("import os\n")
    with pytest.raises(UntrustedModel, match=r"sitecustomize\.py: not part of the export"):
        _load_pyfunc(str(added))

    missing = _copy(stock, tmp_path / "m")
    (missing / "tokenizer.json").unlink()
    with pytest.raises(UntrustedModel, match=r"tokenizer\.json: missing"):
        _load_pyfunc(str(missing))

    unrecorded = _copy(stock, tmp_path / "u")
    info = json.loads((unrecorded / INFO_NAME).read_text())
    del info["sha256"]  # an export from before the hashes, or a stripped record
    (unrecorded / INFO_NAME).write_text(json.dumps(info))
    with pytest.raises(UntrustedModel, match=r"ropenope\.json: no file hashes"):
        _load_pyfunc(str(unrecorded))


def test_loader_runs_remote_code_only_when_trusted_explicitly(remote, tmp_path):
    with pytest.raises(UntrustedModel, match="trust_remote_code"):
        _load_pyfunc(str(remote))
    with pytest.raises(UntrustedModel, match="trust_remote_code"):
        _load_pyfunc(str(remote), {"trust_remote_code": "yes"})  # only True itself
    generator = _load_pyfunc(str(remote), {"trust_remote_code": True})
    assert isinstance(generator.predict(["x"], params={"max_new_tokens": 2})[0], str)

    tampered = _copy(remote, tmp_path)
    code = tampered / "modeling_ropenope.py"
    code.write_text(code.read_text() + "\nimport os  # injected\n")
    with pytest.raises(UntrustedModel, match=r"modeling_ropenope\.py: sha256 .* differs"):
        _load_pyfunc(str(tampered), {"trust_remote_code": True})
