"""Can tfds prepare CIFAR-100 as ArrayRecord where TensorFlow cannot be imported?

tfds's CIFAR-100 builder is run on a stand-in for its download (two records per split in the
archive's binary format; the download itself is replaced, there being no network here), once
in a process where `import tensorflow` fails and once where it works, both writing ArrayRecord.

    python experiments/portability/prepare_without_tensorflow.py
"""
import os
import subprocess
import sys
import tempfile

PREPARE = r'''
import os, numpy as np, tensorflow_datasets as tfds
from unittest import mock
root = os.path.join(os.getcwd(), "download", "cifar-100-binary")
os.makedirs(root)
record = lambda: bytes([1, 2]) + np.random.default_rng(0).integers(0, 256, 3072, np.uint8).tobytes()
for name in ("train.bin", "test.bin"):
    open(os.path.join(root, name), "wb").write(record() + record())
for name, count in (("coarse_label_names.txt", 20), ("fine_label_names.txt", 100)):
    open(os.path.join(root, name), "w").write("\n".join(f"c{i}" for i in range(count)))
builder = tfds.builder("cifar100", data_dir=os.path.join(os.getcwd(), "data"),
                       file_format="array_record")
with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                       lambda self, url: os.path.join(os.getcwd(), "download")):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
print(len(tfds.data_source("cifar100", split="train", data_dir=os.path.join(os.getcwd(), "data"))),
      "train records prepared as ArrayRecord")
'''


def main():
    for tensorflow in (False, True):
        with tempfile.TemporaryDirectory() as work:
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            if not tensorflow:
                blocker = os.path.join(work, "blocked", "tensorflow")
                os.makedirs(blocker)
                with open(os.path.join(blocker, "__init__.py"), "w") as f:
                    f.write('raise ImportError("TensorFlow is not installed")\n')
                env["PYTHONPATH"] = os.path.dirname(blocker)
            result = subprocess.run([sys.executable, "-c", PREPARE], cwd=work, env=env,
                                    capture_output=True, text=True)
            lines = (result.stdout + result.stderr).splitlines()
            prepared = [line for line in lines if "prepared as ArrayRecord" in line]
            in_tfds = [line.strip() for line in lines
                       if line.strip().startswith("File ") and "tensorflow_datasets" in line]
            print(f"TensorFlow importable: {tensorflow}; exit code {result.returncode}: "
                  f"{prepared[-1] if prepared else lines[-1]}")
            if result.returncode and in_tfds:
                print(f"  the last frame in tfds: {in_tfds[-1].split('site-packages/')[-1]}")

if __name__ == "__main__":
    main()
