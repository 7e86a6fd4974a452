"""Text-only-calibrated probes a-e on held-out image-carried harmful vs image-carried benign rows
(both classes carried by the picture, so a probe blind to images scores 0.5), per seed and pair."""
import json
import sys

import torch

torch.set_num_threads(1)
from sasa.data.manifest import read_manifest
from sasa.metrics import auroc, bootstrap_interval
from sasa.organism import load
from sasa.organism.claims import PROBES, _carrier, feature_sets
from sasa.organism.features import ordered
from sasa.probe.sasa_probe import SASAProbe

out = {}
for spec in sys.argv[1:]:
    model_dir, eff, pairs = spec.split(":")
    model, proc = load(model_dir)
    cal = read_manifest(f"{eff}/calibration.jsonl"); held = read_manifest(f"{eff}/heldout.jsonl")
    cal_rows, held_rows = ordered(cal, 32), ordered(held, 32)
    y_cal = torch.tensor([e.label for e in cal_rows]); text = torch.tensor([_carrier(e) == "text" for e in cal_rows])
    y_held = torch.tensor([e.label for e in held_rows]); image = torch.tensor([_carrier(e) == "image" for e in held_rows])
    for pair in pairs.split(";"):
        s, f = map(int, pair.split(","))
        fc = feature_sets(model, proc, cal, s, f); fh = feature_sets(model, proc, held, s, f)
        for name in PROBES:
            probe = SASAProbe.fit(fc[name][text], y_cal[text], target_fpr=0.05, seed=0)
            scores = probe.predict_proba(fh[name][image])[:, 0].double()
            y = y_held[image]
            lo, hi = bootstrap_interval(scores, y, auroc, replicates=1000, seed=0)
            key = f"{model_dir}|{s},{f}|{name}"
            out[key] = [auroc(scores, y), lo, hi]
            print(key, f"{out[key][0]:.3f} [{lo:.3f}, {hi:.3f}]", flush=True)
json.dump(out, open("/tmp/v2runs/image_only.json", "w"), indent=1)
