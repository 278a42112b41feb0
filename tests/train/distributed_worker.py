"""Run by tests/train/test_distributed.py under `python -m torch.distributed.run --nproc_per_node=2`
(one launch for every check, since each launch costs seconds of start-up):

1. a 2-rank DDP training run with SyncBatchNorm for one epoch, then a resume of it in the same
   2-rank world up to epoch 2;
2. `attnlab compare` of the tiny preset spread over the 2 ranks.

Usage: distributed_worker.py OUT_ROOT PRESET_DIR
"""
import json
import sys
from pathlib import Path

import torch

from attnlab import cli
from attnlab.study import presets
from attnlab.train.distributed import current_context, init_distributed
from attnlab.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import PER_RANK_BATCH, ddp_config  # noqa: E402


def main(out_root: Path, preset_dir: Path) -> None:
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    assert context.world_size == 2 and context.backend == "gloo", context
    run = out_root / "ddp"
    Trainer(ddp_config(PER_RANK_BATCH, epochs=1, sync_bn=True), run, progress=False).fit()
    resumed = Trainer(ddp_config(PER_RANK_BATCH, epochs=2, sync_bn=True), run, progress=False)
    result = resumed.fit(resume=True)
    if context.is_main:
        (out_root / "ddp_rank0.json").write_text(json.dumps(result))
    del resumed   # its DDP wrapper holds the process group, which cli.main below destroys
    presets.PRESET_DIR = preset_dir
    code = cli.main(["compare", "--preset", "tiny", "--out", str(out_root / "compare"), "--no-progress"])
    assert code == 0, code
    assert current_context().world_size == 1   # cli.main left the process group


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
