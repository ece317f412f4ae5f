"""One rank of tests/test_ddp.py's torchrun runs (not a test module itself):

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/_ddp_worker.py OUT

Each rank writes OUT/rank<R>.json with what it measured:
- "step": for a plain and an entropy (prior) model, one SGD step through
  DistributedDataParallel(Objective) on this rank's half of a batch against one step of a
  single-process copy on the whole batch (max |dw|), and the same step taken by calling
  `ddp.module` directly (no gradient sync: the way the entropy trainer once went wrong);
- "train": train() for a few epochs under DDP (plain, entropy), every rank's parameters
  gathered; rank 0 saves the plain run's weights (the test trains the same in one
  process and compares);
- "early_stop": a run that stops early (learning rate 0: no epoch improves);
- "lonely_blowup": rank 1 alone sees a validation loss 1000 times too high at epoch 2 (as a
  rank might from a fault of its own): rank 0's numbers decide, so no rank recovers or
  stops alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist

from latentwire.training import distributed
from latentwire.training.data import Dataset, load_data
from latentwire.training.models import ModelConfig, build_model
from latentwire.training.objective import Objective
from latentwire.training.trainer import TrainConfig, train

DENSE = ModelConfig(kind="dense", input_shape=(64,), latent_dim=4, hidden=(32, 16))


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _spread(model: torch.nn.Module) -> float:
    """Largest difference of any parameter between this rank and the others."""
    mine = _flat(model)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return max(float((t - mine).abs().max()) for t in every)


def one_step(world: distributed.World, prior: bool, through_ddp: bool) -> dict[str, float]:
    cfg = dataclasses.replace(DENSE, output_activation="identity", prior=prior)
    torch.manual_seed(0)
    model = build_model(cfg)
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((8, 64), generator=gen)  # the joined batch, the same on every rank
    u = torch.rand((8, 4), generator=gen) - 0.5 if prior else None
    half = slice(4 * world.rank, 4 * world.rank + 4)

    before = _flat(model)
    obj = Objective(model, rate_lambda=0.1).train()
    ddp = distributed.wrap(obj, world)
    step = ddp if through_ddp else obj  # obj is ddp.module: no sync when called directly
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, _ = step(x[half], x[half], None if u is None else u[half])
    loss.backward()
    opt.step()

    ref = Objective(reference, rate_lambda=0.1).train()
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    ref_loss, _ = ref(x, x, u)
    ref_loss.backward()
    ref_opt.step()
    return {
        "max_dw_vs_single": float((_flat(model) - _flat(reference)).abs().max()),
        "rank_spread": _spread(model),
        "step_size": float((_flat(reference) - before).abs().max()),
    }


def digits_subset(n: int) -> Dataset:
    d = load_data("digits")
    return dataclasses.replace(d, x=d.x[:n])


def short_train(prior: bool, **kw: Any) -> tuple[torch.nn.Module, int]:
    cfg = dataclasses.replace(DENSE, prior=prior)
    config = TrainConfig(epochs=3, batch_size=32, progress=False, **kw)
    result = train(digits_subset(400), model_config=cfg, config=config)  # 320 training samples
    return result.model, result.epochs_run


def lonely_blowup(world: distributed.World) -> dict[str, float]:
    original = Objective.forward
    calls = [0]

    def forward(
        self: Objective, inp: torch.Tensor, target: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, bits = original(self, inp, target, noise)
        if not self.training:
            calls[0] += 1
            if calls[0] == 2:
                loss = loss * 1000
        return loss, bits

    if world.rank == 1:
        Objective.forward = forward  # type: ignore[method-assign]
    try:
        model, epochs = short_train(False)
    finally:
        Objective.forward = original  # type: ignore[method-assign]
    return {"epochs_run": epochs, "spread": _spread(model)}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    report: dict[str, Any] = {}
    with distributed.session("cpu") as world:
        report["world"] = [world.rank, world.size, world.backend]
        report["step"] = {
            f"{kind}{'' if ddp else '_without_ddp_forward'}": one_step(world, kind == "prior", ddp)
            for kind in ("plain", "prior")
            for ddp in (True, False)
        }
        plain, _ = short_train(False)
        entropy, _ = short_train(True)
        report["train"] = {"plain_spread": _spread(plain), "prior_spread": _spread(entropy)}
        if world.is_main:  # the test trains the same in one process and compares
            torch.save(plain.state_dict(), out / "plain.pt")
        _, epochs = short_train(False, lr=0.0, patience=1)
        report["early_stop"] = {"epochs_run": epochs}
        report["lonely_blowup"] = lonely_blowup(world)
        distributed.barrier(world)
    (out / f"rank{world.rank}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
