"""NLFT steps under an engine that shards parameters, driven as accelerate drives them; run by test_distributed.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py --engine fsdp2 --out R.pt
    python tests/distributed_worker.py --engine none --out R.pt            # the one-process reference

For every case (architecture x LoRA/full x live/cached reference probabilities) it builds the same tiny model,
prepares it for the engine — FSDP2 through accelerate's own ``fsdp2_prepare_model`` (accelerate itself refuses
FSDP without a GPU, so its state is stood in for), ZeRO-3 through ``deepspeed.initialize`` — and takes
``--steps`` plain SGD steps on the same global batch of four records (two per process), with the trainer's own
``batch_scores`` and ``record_loss``, a saliency snapshot of all four records on every process after each step,
and ``incorrect_sft: judge`` on a process whose records are all correct. Rank 0 writes the losses and the full
parameters of every case to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nlft.method.loss import record_loss  # noqa: E402
from nlft.method.weighting import WeightingConfig  # noqa: E402
from nlft.models.tiny import build_tiny_architecture, load_tokenizer  # noqa: E402
from nlft.prompts import RecordEncoder  # noqa: E402
from nlft.records import records_from_dicts  # noqa: E402
from nlft.train.batches import NLFTCollator, eval_batches  # noqa: E402
from nlft.train.reference import compute_reference_probs  # noqa: E402
from nlft.train.scores import batch_scores  # noqa: E402

Q = "What is 3+4?"
ROWS = [  # ordered so that process 0 gets the two correct records, process 1 the two wrong ones
    {"id": "c1", "question": Q, "response": "3+4 = <<3+4=7>>7\n#### 7", "reference": "3+4=7\n#### 7"},
    {"id": "c2", "question": "What is 2+2?", "response": "2+2 = 4\n#### 4", "reference": "2+2=4\n#### 4"},
    {"id": "w1", "question": Q, "response": "3+4 = 8\n#### 8", "reference": "3+4=7\n#### 7", "judgment": "3+4 is 7."},
    {"id": "w2", "question": "What is 5*2?", "response": "5*2 = 12\n#### 12", "reference": "5*2=10\n#### 10",
     "judgment": "5*2 is 10, not 12."},
]  # fmt: skip
CASES = [
    (arch, mode, reference)
    for arch in ("llama", "gemma2", "gpt2")
    for mode in ("lora", "full")
    for reference in ("live", "cached")
]
# Settings under which the tiny random model's tokens are blamed, confirmed and clustered (see conftest.VISIBLE).
WEIGHTING = WeightingConfig(
    judge_floor=0.0, ratio_threshold=1.0, correct_confidence=0.00025, cluster_radius=0.95
)


def build(arch: str, mode: str):
    model = build_tiny_architecture(arch, seed=11)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        from nlft.models.loading import lora_targets

        torch.manual_seed(12)
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=lora_targets(model, None),
                            init_lora_weights=False)  # fmt: skip
        model = get_peft_model(model, config)
    return model


def fsdp2(model):
    """FSDP2 exactly as accelerate's Trainer path prepares it (decoder layers, embedding, the tail group)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    layers = sorted(
        {type(m).__name__ for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))}
    )
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=layers,
        reshard_after_forward=True, state_dict_type="FULL_STATE_DICT",
    )  # fmt: skip
    from accelerate import Accelerator

    # A real Accelerator on the process group torchrun made, so that the wrapping reads what the Trainer's does
    # (its device, process flags, mesh). On CPU accelerate does not turn FSDP on by itself: the plugin is handed
    # to its state as a GPU launch would.
    accelerator = Accelerator(cpu=True)
    accelerator.state.fsdp_plugin = plugin
    return fsdp2_prepare_model(accelerator, model)


def run_case(arch, mode, reference, engine, steps, world, rank, tokenizer, encoded, collator):
    torch.manual_seed(0)
    model = build(arch, mode)
    trainable = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    wrapped, engine_obj = model, None
    if engine == "fsdp2":
        wrapped = model = fsdp2(model)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    elif engine == "zero3":
        import deepspeed

        optimizer = torch.optim.SGD(trainable, lr=0.5)
        config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                  "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}, "gradient_clipping": 0,
                  "zero_allow_untested_optimizer": True}  # fmt: skip
        engine_obj, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        wrapped = engine_obj
    else:
        optimizer = torch.optim.SGD(trainable, lr=0.5)
    mine = encoded if world == 1 else encoded[rank * 2 : rank * 2 + 2]
    net = model  # the module itself: engines keep their hooks on it
    cache = None
    if reference == "cached":
        cache = compute_reference_probs(net, encoded, collator, batch_size=2, progress=False)
    losses = []
    for _ in range(steps):
        batch = collator([r.to_features() for r in mine])
        scores = batch_scores(wrapped, batch, reference_probs=reference, reference_cache=cache, judge_grad=True,
                              scoring_model=net)  # fmt: skip
        total = scores.anchor
        for rec in scores:
            out = record_loss(rec.correct, rec.p_base, rec.p_std, rec.p_judge, rec.hidden, WEIGHTING,
                              incorrect_sft="judge", p_judge_grad=rec.p_judge_grad)  # fmt: skip
            total = total + out.loss
        loss = total / len(encoded) * world  # the engines average over processes: the mean over all four
        if engine == "zero3":
            engine_obj.backward(loss)
            engine_obj.step()
        else:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        step_loss = loss.detach().clone()
        if world > 1:
            dist.all_reduce(step_loss)
            step_loss /= world
        losses.append(step_loss.item())
        # A saliency snapshot of every record, on every process (collectives under sharding).
        for _ in eval_batches(net, encoded, collator, lambda b: batch_scores(net, b, reference_probs=reference,
                              reference_cache=cache), batch_size=2):  # fmt: skip
            pass
    return losses, gather(model, names, engine, engine_obj)


def gather(model, names, engine, engine_obj) -> dict[str, torch.Tensor]:
    """The full values of the trainable parameters (on every rank; rank 0 keeps them)."""
    if engine == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {n: full[n].clone() for n in names if n in full}
    if engine == "zero3":
        import deepspeed

        params = dict(engine_obj.module.named_parameters())
        with deepspeed.zero.GatheredParameters([params[n] for n in names]):
            return {n: params[n].detach().clone() for n in names}
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in names}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["none", "ddp", "fsdp2", "zero3"], required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        if args.engine == "zero3":
            import deepspeed

            deepspeed.init_distributed(dist_backend="gloo")
        else:
            dist.init_process_group("gloo")
    tokenizer = load_tokenizer()
    encoder = RecordEncoder(tokenizer, "math", max_length=512)
    encoded = encoder.encode_all(records_from_dicts(ROWS)).records
    collator = NLFTCollator(tokenizer.pad_token_id)
    wanted = CASES if args.cases == "all" else [c for c in CASES if "-".join(c) in args.cases.split(",")]
    results = {}
    for case in wanted:
        results["-".join(case)] = run_case(
            *case, args.engine, args.steps, world, rank, tokenizer, encoded, collator
        )
    if rank == 0:
        torch.save(results, args.out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
