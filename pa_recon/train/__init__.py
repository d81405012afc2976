"""One trainer for every flow model (and the regression baselines).

Typical use::

    from pa_recon.train import Trainer, TrainConfig

    def loss_fn(model, batch):               # batch: a tensor, or (x, cond) for conditional models
        nll = -model.log_prob(batch).mean()
        return nll, {"bpd": float(nll) / (math.log(2) * num_pixels)}

    config = TrainConfig.from_dict(params["train"])       # e.g. a params.yaml section
    metrics = Trainer(model, config, loss_fn, train_x, val_x, sample_fn=draw_images).fit()

What it does: AdamW with warm-up then cosine/step/exponential decay, gradient clipping, bf16 autocast on GPU
(fp32 on CPU), optional ``torch.compile``, optional EMA of the weights (used for validation and samples),
a tqdm bar, periodic validation, sample grids as PNG, atomic checkpoints, and exact resume from
``<out_dir>/last.pt`` — also in a later process, so a long GPU run can span several calls of ``fit()``.

Tracking: every run is an MLflow run (unless ``tracking: false``) with the config as params, per-step
(``train/*``, every ``log_every`` steps), per-epoch (``epoch/*``) and validation (``val/*``) metrics, the
sample PNGs and the final checkpoint as artifacts, and the model (EMA weights) logged with the PyTorch
flavour. A resumed run continues the same MLflow run. By default the runs go to ``mlflow.db`` (SQLite) in the
working directory, their artifacts to ``./mlruns``; to look at them::

    mlflow ui --backend-store-uri sqlite:///mlflow.db

and open http://127.0.0.1:5000. Set ``tracking_uri`` to a server (``http://host:5000``) to log there instead.
"""

from pa_recon.train.checkpoint import inference_state_dict, load_checkpoint, save_checkpoint
from pa_recon.train.config import TrainConfig
from pa_recon.train.ema import EMA
from pa_recon.train.trainer import (
    Data,
    LossFn,
    SampleFn,
    TensorData,
    Trainer,
    lr_multiplier,
    save_image_grid,
    seed_everything,
)

__all__ = [
    "EMA",
    "Data",
    "LossFn",
    "SampleFn",
    "TensorData",
    "TrainConfig",
    "Trainer",
    "inference_state_dict",
    "load_checkpoint",
    "lr_multiplier",
    "save_checkpoint",
    "save_image_grid",
    "seed_everything",
]
