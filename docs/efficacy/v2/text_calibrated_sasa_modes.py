"""Text-calibrated SASA features in each projection mode, image-carried harmful vs image-carried benign."""
import sys

import torch

torch.set_num_threads(1)
from sasa import SASAConfig
from sasa.data.manifest import read_manifest
from sasa.metrics import auroc
from sasa.organism import load
from sasa.organism.claims import _carrier
from sasa.organism.features import ordered, sasa_features
from sasa.probe.sasa_probe import SASAProbe

for spec in sys.argv[1:]:
    model_dir, eff, pair = spec.split(":")
    s, f = map(int, pair.split(","))
    model, proc = load(model_dir)
    cal = read_manifest(f"{eff}/calibration.jsonl"); held = read_manifest(f"{eff}/heldout.jsonl")
    cal_rows, held_rows = ordered(cal, 32), ordered(held, 32)
    y_cal = torch.tensor([e.label for e in cal_rows]); text = torch.tensor([_carrier(e) == "text" for e in cal_rows])
    y_held = torch.tensor([e.label for e in held_rows]); image = torch.tensor([_carrier(e) == "image" for e in held_rows])
    for mode, coef in (("replace", 1.0), ("residual", 1.0), ("interpolate", 0.5)):
        for feature in ("logits", "hidden"):
            cfg = SASAConfig(safety_layer=s, fused_layer=f, scope="last", feature=feature, mode=mode, coef=coef)
            xc = sasa_features(model, proc, cal, cfg); xh = sasa_features(model, proc, held, cfg)
            probe = SASAProbe.fit(xc[text], y_cal[text], target_fpr=0.05, seed=0)
            sc = probe.predict_proba(xh[image])[:, 0].double()
            print(model_dir, pair, mode, coef, feature, f"{auroc(sc, y_held[image]):.3f}", flush=True)
