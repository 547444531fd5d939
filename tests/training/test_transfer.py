"""Pretraining and fine-tuning across catalogues: the DisenCDR reader, pretrain -> finetune
through the CLI, frozen parameters, save/load of the fine-tuned model and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from evorec.config import DataConfig, RunConfig
from evorec.data.formats import detect_format, read_events
from evorec.data.load import from_frame, load_dataset
from evorec.errors import EvorecError
from evorec.models.base import Recommender
from evorec.training.pipeline import train
from evorec.training.transfer import (
    combine,
    finetune,
    freeze_parameters,
    pretrain,
    transfer_parameters,
)

PAIR = "amazon-crossdomain"
SMALL = ["dim=16", "layers=1", "epochs=2", "max_len=10", "valid_users=100", "seed=3"]
PREPROCESS = {"min_user_events": 3, "min_item_events": 1}
PREP_SETS = [a for k, v in PREPROCESS.items() for a in ("--set", f"data.preprocess.{k}={v}")]


def settings(values: list[str]) -> dict[str, object]:
    return {"name": "sasrec", **{k: json.loads(v) for k, v in (s.split("=") for s in values)}}


def cut(source: Path, dest: Path, users: int) -> Path:
    """The DisenCDR files of ``source`` restricted to users ``< users``."""
    dest.mkdir(parents=True)
    for name in ("train.txt", "test_original.txt"):
        lines = (source / name).read_text().splitlines()
        kept = [line for line in lines if int(line.split("\t")[0]) < users]
        (dest / name).write_text("\n".join(kept) + "\n")
    return dest


@pytest.fixture(scope="module")
def domains(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Phone (source) and sport (target) of the phone/sport pair, first 300 shared users."""
    root = tmp_path_factory.mktemp("domains")
    pair = datasets_dir / PAIR
    return {
        "phone": cut(pair / "phone_sport", root / "phone", 300),
        "sport": cut(pair / "sport_phone", root / "sport", 300),
    }


@pytest.fixture(scope="module")
def pretrained(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "phone"
    torch.set_num_threads(1)
    config = RunConfig(data=DataConfig(preprocess=PREPROCESS), model=settings(SMALL))
    pretrain(config, [str(domains["phone"])], out)
    return out


def test_disencdr_reader_puts_each_users_held_out_item_last(datasets_dir: Path) -> None:
    folder = datasets_dir / PAIR / "sport_phone"
    assert detect_format(folder) == "disencdr"
    events = read_events(folder).events
    held_out = pl.read_csv(
        folder / "test_original.txt", separator="\t", has_header=False, new_columns=["u", "i", "r"]
    )
    last = events.group_by("user_id", maintain_order=True).agg(pl.col("item_id").last())
    merged = last.join(held_out, left_on="user_id", right_on="u")
    assert merged.height == held_out.height == 4998
    assert (merged["item_id"] == merged["i"]).all()
    train_lines = len((folder / "train.txt").read_text().splitlines())
    assert events.height == train_lines + held_out.height


def test_pretrain_finetune_round_trip_with_a_frozen_trunk(
    run, domains: dict[str, Path], pretrained: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    out = tmp_path / "sport"
    sets = [a for s in ["epochs=2", "valid_users=100"] for a in ("--set", s)]
    result = run(
        "finetune", "--from", pretrained, "--data", domains["sport"], "--out", out,
        "--freeze", "trunk", "--quiet", *sets, *PREP_SETS,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "fine-tuned from" in result.out and "NDCG" in result.out
    source = Recommender.load(pretrained)
    tuned = Recommender.load(out)
    written = json.loads((out / "evorec-model.json").read_text())
    manifest = written["transfer"]
    assert manifest["freeze"] == "trunk" and manifest["frozen"]
    # refit by default: fine-tuned again on every target event for the chosen epochs
    refit = written["refit"]
    assert refit["events"] == tuned.dataset.n_events
    assert refit["settings"] == {"epochs": written["fit_info"]["best_epoch"]}
    assert not any(k.startswith("item_embedding") for k in manifest["transferred"])
    before = source.network.state_dict()
    after = tuned.network.state_dict()
    for key in manifest["frozen"]:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    # the target's item table is its own and was trained
    assert after["item_embedding.weight"].shape[0] == tuned.n_items + 1 != source.n_items + 1
    assert tuned.config.dim == source.config.dim == 16
    # saved and loaded: identical scores
    hist = tuned.dataset.histories.take(np.arange(50))
    again = Recommender.load(out)
    torch.testing.assert_close(again.score(hist), tuned.score(hist), rtol=0, atol=0)


def test_transfer_copies_the_trunk_and_leaves_the_item_table_fresh(
    domains: dict[str, Path], pretrained: Path, one_torch_thread: None
) -> None:
    source = Recommender.load(pretrained)
    target = source.__class__(source.config)
    target.dataset = load_dataset(domains["sport"], preprocess_config=PREPROCESS)
    network = target.new_network(target.dataset.n_items)
    fresh = network.item_embedding.weight.detach().clone()
    copied = transfer_parameters(source.network, network)
    before = source.network.state_dict()
    after = network.state_dict()
    assert set(copied) == {k for k in before if not k.startswith("item_embedding")}
    for key in copied:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    torch.testing.assert_close(after["item_embedding.weight"], fresh, rtol=0, atol=0)
    assert freeze_parameters(network, "none", copied) == []
    assert all(p.requires_grad for p in network.parameters())


def test_freeze_none_trains_the_transferred_trunk(
    domains: dict[str, Path], pretrained: Path, one_torch_thread: None
) -> None:
    config = RunConfig(
        data=DataConfig(path=str(domains["sport"]), preprocess=PREPROCESS),
        model={"name": "sasrec", "epochs": 1, "valid_users": 100},
    )
    before = Recommender.load(pretrained).network.state_dict()
    tuned = finetune(pretrained, config, freeze="none").model.network.state_dict()
    assert not torch.equal(before["blocks.0.qkv.weight"], tuned["blocks.0.qkv.weight"])


def test_text_projection_transfers_and_stays_fixed_with_freeze_items(
    datasets_dir: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    full = read_events(datasets_dir / "amazon-scientific-text")
    # the 100 most popular items (few texts to embed); each half of the users a dataset
    top = full.events["item_id"].value_counts(sort=True).head(100)["item_id"]
    events = full.events.select("user_id", "item_id").filter(pl.col("item_id").is_in(top.implode()))
    users = events["user_id"].unique().sort()
    halves = [users.head(len(users) // 2), users.tail(len(users) - len(users) // 2)]
    source, target = (
        from_frame(
            events.filter(pl.col("user_id").is_in(part.implode())),
            timestamp=None,
            items=full.items,
            preprocess_config=PREPROCESS,
            name=f"scientific-{k}",
        )
        for k, part in enumerate(halves)
    )
    model = settings([*SMALL, 'item_features=["id", "text"]'])
    config = RunConfig(data=DataConfig(preprocess=PREPROCESS), model=model)
    train(config, tmp_path / "pre", dataset=source)
    tuned = finetune(
        tmp_path / "pre", config, tmp_path / "tuned", freeze="items", dataset=target
    ).model
    before = Recommender.load(tmp_path / "pre").network.state_dict()
    after = tuned.network.state_dict()
    for key in ("item_encoder.text.weight", "item_encoder.text.bias"):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert not torch.equal(after["blocks.0.qkv.weight"], before["blocks.0.qkv.weight"])
    hist = tuned.dataset.histories.take(np.arange(20))
    again = Recommender.load(tmp_path / "tuned")
    torch.testing.assert_close(again.score(hist), tuned.score(hist), rtol=0, atol=0)


def test_several_sources_are_joined_with_prefixed_ids(
    run, domains: dict[str, Path], tmp_path: Path, one_torch_thread: None
) -> None:
    phone, sport = (load_dataset(domains[d], preprocess_config=PREPROCESS) for d in domains)
    joined = combine([phone, sport])
    assert joined.n_items == phone.n_items + sport.n_items
    assert joined.n_users == phone.n_users + sport.n_users
    assert joined.item_ids[0].startswith("0:") and joined.item_ids[-1].startswith("1:")
    np.testing.assert_array_equal(
        joined.histories[phone.n_users], sport.histories[0] + phone.n_items
    )
    # item tables (texts) follow their items' prefixed ids
    with_text = [
        from_frame(
            pl.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [5, 6, 7, 5, 6, 7]}),
            timestamp=None,
            items=pl.DataFrame({"item_id": [5, 6, 7], "text": [f"{k} a", f"{k} b", f"{k} c"]}),
            preprocess_config=PREPROCESS,
        )
        for k in ("x", "y")
    ]
    items = combine(with_text).items
    assert items is not None
    assert items.select("item_id", "item_idx", "text").row(4) == ("1:6", 4, "y b")
    # a source whose text is a title (MovieLens) joins the others' text column
    titled = with_text[1]
    assert titled.items is not None
    titled.items = titled.items.rename({"text": "title"})
    items = combine(with_text).items
    assert items is not None
    assert items["text"].to_list() == ["x a", "x b", "x c", "y a", "y b", "y c"]
    sets = [a for s in [*SMALL[:-2], "epochs=1"] for a in ("--set", s)]
    result = run(
        "pretrain", "--data", domains["phone"], "--data", domains["sport"], "--model", "sasrec",
        "--out", tmp_path / "both", "--quiet", *sets, *PREP_SETS,
    )  # fmt: skip
    assert result.code == 0, result.err
    model = Recommender.load(tmp_path / "both")
    assert model.n_items == joined.n_items and model.dataset.name == "phone+sport"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "{tmp}/missing"], "pretrained model directory not found"),
        (["--from", "{pre}", "--set", "dim=32"], "incompatible model: parameter"),
        (["--from", "{pre}", "--set", "name=gru4rec"], "cannot fine-tune a pretrained sasrec"),
        (["--from", "{pre}", "--freeze", "items"], "no transferred item encoder"),
        (["--from", "{pre}", "--freeze", "all"], "--freeze must be one of"),
        (["--from", "{pop}"], "only sequence models can be fine-tuned"),
    ],
)
def test_bad_finetune_inputs_are_one_line_errors(
    run,
    domains: dict[str, Path],
    pretrained: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
    one_torch_thread: None,
) -> None:
    pop = tmp_path / "pop"
    if "{pop}" in args:
        trained = run(
            "train", "--data", domains["phone"], "--model", "pop", "--out", pop, *PREP_SETS
        )
        assert trained.code == 0, trained.err
    filled = [a.format(tmp=tmp_path, pre=pretrained, pop=pop) for a in args]
    result = run(
        "finetune", *filled, "--data", domains["sport"], "--out", tmp_path / "o", *PREP_SETS
    )
    assert result.code == 1
    assert result.err.startswith("error: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_pretrain_refuses_a_model_that_is_not_a_sequence_model(
    run, domains: dict[str, Path], tmp_path: Path
) -> None:
    result = run("pretrain", "--data", domains["phone"], "--model", "ease", "--out", tmp_path)
    assert result.code == 1 and "pretraining needs a sequence model" in result.err
    with pytest.raises(EvorecError, match="at least one source"):
        pretrain(RunConfig(), [], tmp_path / "x")
