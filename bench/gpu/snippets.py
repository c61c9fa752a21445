"""The programs bench_gpu.py runs, one process each (`python -c SNIPPET ARGS`), so that every tool
starts clean and is timed as its users run it. The --smoke model's open_clip config path, where given,
is registered first (clipscale's eval reads the config from the checkpoint)."""

TRAIN_CLIPSCALE = """
import json, sys
if sys.argv[1]:
    import open_clip
    open_clip.add_model_config(sys.argv[1])
from clipscale.train import load_train_config, train
train(load_train_config(None, json.loads(sys.argv[2])))
"""
TRAIN_OPEN_CLIP = """
import sys
if sys.argv[1]:
    import open_clip
    open_clip.add_model_config(sys.argv[1])
from open_clip_train.main import main
main(sys.argv[2:])
"""
EVAL_CLIPSCALE = """
import json, sys, time
t0 = time.perf_counter()
import open_clip  # noqa: F401  (imported before timing, as for CLIP_benchmark)
from clipscale.evals import evaluate_checkpoint, load_suite
t1 = time.perf_counter()
records = evaluate_checkpoint(sys.argv[1], suite=load_suite("synth", root=sys.argv[2]), device=sys.argv[3],
                              batch_size=int(sys.argv[4]))
print("BENCH", json.dumps({"import_s": t1 - t0, "eval_s": time.perf_counter() - t1,
                           "metrics": {r["dataset"]: r["metrics"] for r in records}}))
"""
EVAL_CLIP_BENCHMARK = """
import importlib.abc, importlib.machinery, importlib.util, json, sys, time, types

class Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # pycocoevalcap (a 100 MB wheel, over the device's carry limit) serves only CLIP_benchmark's
    # captioning metrics, which cli.py imports at start-up; zero-shot tasks never call it
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "pycocoevalcap":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__, module.__getattr__ = [], lambda attr: type(attr, (), {})
        return module
    def exec_module(self, module):
        pass

if importlib.util.find_spec("pycocoevalcap") is None:
    sys.meta_path.append(Stub())
t0 = time.perf_counter()
import open_clip
from clip_benchmark import cli
from clip_benchmark.metrics import zeroshot_classification as zc


def accuracy(output, target, topk=(1,)):
    # zc.accuracy as released (1.6.2), but float() of a 1-element array fails on numpy >= 2.4
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


zc.accuracy = accuracy
if sys.argv[2]:
    open_clip.add_model_config(sys.argv[2])
t1 = time.perf_counter()
for argv in json.loads(sys.argv[1]):
    sys.argv = ["clip_benchmark", "eval", *argv]
    cli.main()
print("BENCH", json.dumps({"import_s": t1 - t0, "eval_s": time.perf_counter() - t1}))
"""
