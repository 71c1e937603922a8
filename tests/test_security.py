"""No code can be loaded from a weight or data file: a scan of the package's source."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["data_prep", "tokenizer", "foundation", "finetune", "benchmarks", "tests"]
FILES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _problems(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for n in names):
                found.append(f"line {node.lineno}: imports a pickle module")
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        if func.endswith("torch.load"):
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
        for flag in ("trust_remote_code", "allow_pickle"):
            value = _keyword(node, flag)
            if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                found.append(f"line {node.lineno}: {flag} is not False")
    return found


def test_the_scan_catches_what_it_looks_for():
    bad = (
        "import pickle\n"
        "torch.load('w.pt')\n"
        "torch.load('w.pt', weights_only=False)\n"
        "AutoModel.from_pretrained('x', trust_remote_code=True)\n"
        "np.load('a.npy', allow_pickle=True)\n"
    )
    assert len(_problems(ast.parse(bad))) == 5
    good = "torch.load('w.pt', weights_only=True)\nnp.load('a.npy', allow_pickle=False)\n"
    assert _problems(ast.parse(good)) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_and_no_remote_code(path):
    assert _problems(ast.parse(path.read_text(), filename=str(path))) == []


def test_weights_are_safetensors_and_configs_json():
    shipped = [p for p in (ROOT / "pretrained_models").rglob("*") if p.is_file()]
    assert shipped
    for path in shipped:
        assert path.suffix in (".safetensors", ".json", ".jsonl", ".md"), path
