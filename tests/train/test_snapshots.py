"""Saliency snapshots: the file format, the probe, and the training callback whose snapshots must give the
trainer's own weights for a record at that step."""

import pytest
import torch

from nlft.method.weighting import WeightingConfig, token_weights
from nlft.see.views import record_view
from nlft.train.callbacks import TrainerAware, choose_probe
from nlft.train.snapshots import (
    Snapshot,
    list_snapshots,
    load_snapshot,
    snapshot_path,
    write_snapshot,
)

from ..conftest import ROWS, VISIBLE, config, make_probe


def test_snapshot_round_trip_and_listing(tmp_path):
    records = [make_probe("w", False), make_probe("c", True, seed=3)]
    cfg = WeightingConfig(threshold=1.1)
    path = write_snapshot(tmp_path, Snapshot(7, records, cfg, epoch=1.5, reference_probs="initial"))
    assert path == snapshot_path(tmp_path, 7)
    (path.parent / ".step-00000009.pt.abc.tmp").write_bytes(b"half")  # a write in progress
    write_snapshot(tmp_path, Snapshot(12, records, cfg))
    assert [s for s, _ in list_snapshots(tmp_path)] == [7, 12]
    back = load_snapshot(path)
    assert (back.step, back.epoch, back.reference_probs, back.weighting) == (7, 1.5, "initial", cfg)
    for a, b in zip(records, back.records):
        assert (a.id, a.correct, a.question, a.judgment, a.tokens, a.token_ids) == (
            b.id,
            b.correct,
            b.question,
            b.judgment,
            b.tokens,
            b.token_ids,
        )
        for name in ("p_base", "p_std", "p_judge", "hidden"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y)
    damaged = snapshot_path(tmp_path, 13)
    damaged.write_bytes(b"not a snapshot")
    with pytest.raises(ValueError, match="step-00000013.pt"):
        load_snapshot(damaged)


def test_probe_alternates_wrong_and_correct():
    from nlft.prompts import EncodedRecord

    recs = [EncodedRecord(f"{'c' if ok else 'w'}{i}", ok, [1], {}) for i, ok in enumerate([1, 1, 1, 0, 1, 0])]
    assert [r.id for r in choose_probe(recs, 4)] == ["w3", "c0", "w5", "c1"]
    assert [r.id for r in choose_probe(recs, 9)] == ["w3", "c0", "w5", "c1", "c2", "c4"]


def test_snapshots_give_the_trainers_weights_at_that_step(tmp_path, monkeypatch):
    """A snapshot's views (and what the studio sends) equal token_weights of trainer.score_batch at that step
    (same batch: exactly), and the weights compute_loss uses on those records in the next step (another batch
    order: to rounding)."""
    import nlft.train.trainer as trainer_module
    from nlft.see.studio import Studio
    from nlft.train.run import train

    in_loss: dict[tuple[int, str], object] = {}
    order: list[str] = []
    state = {"step": 0}
    real_score_batch = trainer_module.NLFTTrainer.score_batch
    real_record_loss = trainer_module.record_loss

    def score_batch(self, model, inputs):
        scores = real_score_batch(self, model, inputs)
        if model.training:
            order[:] = [s.id for s in scores]
            state["step"] = self.state.global_step
        return scores

    def record_loss(*args, **kwargs):
        out = real_record_loss(*args, **kwargs)
        in_loss[(state["step"], order.pop(0))] = out.weights
        return out

    monkeypatch.setattr(trainer_module.NLFTTrainer, "score_batch", score_batch)
    monkeypatch.setattr(trainer_module, "record_loss", record_loss)

    checked: list[int] = []

    class Compare(TrainerAware):
        """Runs right after the snapshot callback, on the same model state."""

        def on_step_end(self, args, state, control, **kwargs):
            trainer = self.trainer
            snap = load_snapshot(snapshot_path(args.output_dir, state.global_step))
            probe = [r for r in trainer.train_dataset if r["id"] in {p.id for p in snap.records}]
            probe.sort(key=lambda r: [p.id for p in snap.records].index(r["id"]))
            batch = trainer.data_collator(probe)
            trainer.model.eval()
            with torch.no_grad():
                scores = real_score_batch(trainer, trainer.model, batch)
            trainer.model.train()
            shown = Studio(args.output_dir).view(state.global_step)["records"]  # what nlft studio sends
            for rec, s, page in zip(snap.records, scores, shown):
                view = record_view(rec, snap.weighting)
                expected = token_weights(s.correct, s.p_base, s.p_std, s.p_judge, s.hidden, trainer.weighting)
                assert rec.id == s.id == page["id"]
                assert [t.weight for t in view.tokens] == expected.weight.tolist()
                assert [t["weight"] for t in page["tokens"]] == expected.weight.tolist()
                assert torch.equal(view.weights.cluster, expected.cluster)
            checked.append(state.global_step)
            return control

    data, model_cfg, args = config(
        tmp_path, *VISIBLE, "--saliency_steps", "1", "--saliency_probe", "4", "--num_train_epochs", "3",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--learning_rate", "5e-2",
        "--warmup_steps", "0",
    )  # fmt: skip
    result = train(data, model_cfg, args, callbacks=[Compare()])
    assert result.global_step == 3 and checked == [1, 2, 3]
    assert [s for s, _ in list_snapshots(tmp_path / "run")] == [0, 1, 2, 3]

    compared = 0
    for step in (0, 1, 2):  # the loss of step N+1 is computed on the model the snapshot of step N saw
        snap = load_snapshot(snapshot_path(tmp_path / "run", step))
        assert {r.id for r in snap.records} == {r["id"] for r in ROWS}
        for rec in snap.records:
            view = record_view(rec, snap.weighting)
            used = in_loss[(step, rec.id)]
            assert torch.equal(view.weights.salient, used.salient)
            assert torch.equal(view.weights.cluster, used.cluster)
            assert torch.allclose(view.weights.weight, used.weight, rtol=1e-5, atol=1e-7)
            compared += 1
    assert compared == 12
    # The settings made the comparison meaningful, and training moved the probabilities between snapshots.
    first = load_snapshot(snapshot_path(tmp_path / "run", 0))
    for v in [record_view(r, first.weighting) for r in first.records]:
        assert 0 < v.salient < v.n and v.neighbours > 0, (v.id, v.n, v.salient, v.neighbours)
    last = load_snapshot(snapshot_path(tmp_path / "run", 3))
    assert not torch.equal(first.records[0].p_base, last.records[0].p_base)


def test_snapshots_every_k_steps_and_at_the_end(tmp_path):
    from nlft.train.run import train

    data, model_cfg, args = config(
        tmp_path, "--saliency_steps", "2", "--saliency_probe", "2", "--max_steps", "3",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
    )  # fmt: skip
    train(data, model_cfg, args)
    steps = list_snapshots(tmp_path / "run")
    assert [s for s, _ in steps] == [0, 2, 3]
    snap = load_snapshot(steps[-1][1])
    assert [r.id for r in snap.records] == ["w1", "c1"]  # the probe: wrong and correct alternating
    wrong = snap.records[0]
    assert wrong.question == ROWS[1]["question"] and wrong.judgment == ROWS[1]["judgment"]
    assert "".join(wrong.tokens).startswith(ROWS[1]["response"])
    assert wrong.hidden.shape[0] == wrong.p_base.shape[0] == len(wrong.tokens) == len(wrong.token_ids)
