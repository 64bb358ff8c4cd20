"""The shared command-line options (specexit.cli_options): one --tree parser, one set of exit knobs."""

import argparse
import json

import pytest

from specexit.cli import main as cli_main
from specexit.cli_options import (
    AUTO_BOUNDS,
    DEFAULT_TREE,
    OptionError,
    parse_pairs,
    parse_thresholds,
    parse_tree,
    split_list,
)
from specexit.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from specexit.tiny import make_tiny

    path = make_tiny("qwen3", tmp_path_factory.mktemp("cli-tiny"))
    draft = tmp_path_factory.mktemp("cli-draft")
    assert cli_main(["init-draft", "--target", str(path), "--out", str(draft)]) == 0
    return path, draft


def test_parse_tree_takes_auto_a_dynamic_tree_or_a_chain():
    auto = parse_tree("auto")
    assert auto.auto and (auto.total_tokens, auto.depth, auto.branching) == AUTO_BOUNDS
    bounded = parse_tree("auto:16,5,4")
    assert bounded.auto and (bounded.total_tokens, bounded.depth, bounded.branching) == (16, 5, 4)
    assert not parse_tree("16,5,4").auto and DEFAULT_TREE == "auto"
    assert parse_tree("chain:4") == parse_tree(" chain: 4")
    chain = parse_tree("chain:4")
    assert chain.chain and chain.depth == 4 and chain.budget == 4 and chain.k == 1
    tree = parse_tree("16,5,4")
    assert not tree.chain and (tree.total_tokens, tree.depth, tree.branching) == (16, 5, 4)
    for bad in ("chain:x", "16,5", "tree", "chain:", "1,2,3,4", "", "auto:1,2", "auto:x"):
        with pytest.raises(OptionError, match=r"^--tree .* is not a tree: use --tree auto\[:total,depth,branching\]"):
            parse_tree(bad)
    # an OptionError is what the CLI prints (a ConfigError) and what a text parser raises (a ValueError)
    assert issubclass(OptionError, ConfigError) and issubclass(OptionError, ValueError)
    with pytest.raises(OptionError, match=r"^--tree 'chain:0': tree depth must be >= 1"):
        parse_tree("chain:0")
    with pytest.raises(OptionError, match=r"^--tree '60,6,0': tree branching must be >= 1"):
        parse_tree("60,6,0")


def test_value_parsers():
    assert split_list(" Wait, But,,So ") == ("Wait", "But", "So") and split_list("") == ()
    assert parse_pairs("a=1, b = x ,", "knob") == {"a": "1", "b": "x"}
    with pytest.raises(OptionError, match=r"knob 'a' must look like name=value"):
        parse_pairs("a", "knob")
    assert parse_thresholds("confidence=0.8, remain=200") == {"confidence": 0.8, "remain": 200.0}
    with pytest.raises(argparse.ArgumentTypeError, match="threshold 'confidence' must look like name=value"):
        parse_thresholds("confidence")
    with pytest.raises(argparse.ArgumentTypeError, match="threshold value 'high' is not a number"):
        parse_thresholds("confidence=high")


def test_generate_takes_a_chain_tree(tiny, monkeypatch, capsys):
    """`generate --tree chain:4` (an error before the options were shared) drafts a chain of 4, like
    `--chain 4`, and greedy speculative decoding reproduces plain decoding."""
    from specexit.engine import SpecExitGenerator

    path, draft = tiny
    trees = []
    stream = SpecExitGenerator.stream

    def spy(self, *args, **kwargs):
        trees.append(kwargs["tree"])
        return stream(self, *args, **kwargs)

    monkeypatch.setattr(SpecExitGenerator, "stream", spy)
    argv = ["generate", "--target", str(path), "--draft", str(draft), "--prompt", "hi", "--max-new-tokens", "12",
            "--json"]  # fmt: skip
    outs = {}
    for name, extra in [("vanilla", ["--mode", "vanilla"]), ("tree", ["--mode", "spec", "--tree", "chain:4"]),
                        ("flag", ["--mode", "spec", "--chain", "4"])]:  # fmt: skip
        assert cli_main([*argv, *extra]) == 0
        outs[name] = json.loads(capsys.readouterr().out)
    assert trees[1].chain and trees[1].depth == 4 and trees[2].chain and trees[2].depth == 4
    assert outs["tree"]["token_ids"] == outs["flag"]["token_ids"] == outs["vanilla"]["token_ids"]
    assert outs["tree"]["mode"] == "spec" and all(1 <= n <= 5 for n in outs["tree"]["accept_lengths"])


@pytest.mark.parametrize("cmd", ["generate", "bench"])
def test_a_bad_tree_is_a_one_line_error_naming_the_option(cmd, tmp_path, capsys):
    """Parsed before any model loads: the target folder need not exist."""
    argv = [cmd, "--target", str(tmp_path / "none"), "--tree", "16,5"]
    argv += ["--prompt", "hi"] if cmd == "generate" else ["--dataset", "gsm8k100", "--out", str(tmp_path / "o")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        "specexit: error: --tree '16,5' is not a tree: use --tree auto[:total,depth,branching] (adaptive), "
        "total,depth,branching or chain:DEPTH (e.g. auto, 60,6,10 or chain:4)\n"
    )


def test_serve_takes_the_same_tree_and_exit_knobs():
    pytest.importorskip("fastapi")
    from specexit.serve.cli import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    a = parser.parse_args(["serve", "--target", "t", "--tree", "chain:3", "--connectors", "Wait, So"])
    cfg = build_config(a, ["confidence"])
    assert cfg.tree.chain and cfg.tree.depth == 3
    assert cfg.exit_config.thresholds == {"confidence": 0.8} and cfg.exit_config.connectors == ("Wait", "So")
    a = parser.parse_args(["serve", "--target", "t", "--tree", "60,6"])
    with pytest.raises(OptionError, match=r"^--tree '60,6' is not a tree"):
        build_config(a, ["confidence"])


def test_mode_choices_come_from_one_constant(capsys):
    from specexit.results import MODES

    with pytest.raises(SystemExit):
        cli_main(["generate", "--target", "t", "--prompt", "hi", "--mode", "fast"])
    err = capsys.readouterr().err
    assert "--mode" in err and all(m in err.split("choose from")[1] for m in MODES)
