"""Benchmark: `jetpack fetch` of a signed ~256 MiB image by name, beside its shell floor.

Run: ``.venv/bin/python bench/fetch_bench.py [--runs 3]`` (as root; needs curl).

A local HTTPS server (a test CA made here) serves the bench ACI of ``aci_bench.py`` renamed
``localhost/bench``, its signature (a GnuPG key made here) and a discovery page. Measured,
into an empty store on tmpfs each time:

- ``jetpack fetch localhost/bench:1.0.0`` — discovery, download, signature check (gpg),
  single-pass import — against ``curl -s URL | tee x.aci | gunzip | tee >(sha512sum) |
  tar -x`` (no discovery, no signature check, no index): the target is at most 1.2x;
- a second fetch with ``--pull-policy=new`` and one with ``--pull-policy=update`` while the
  server's ``max-age`` is fresh: both must make no download (the server counts requests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from aci_bench import best, image, row  # noqa: E402

from jetpack.aci import patch_aci  # noqa: E402
from jetpack.discovery import host_labels  # noqa: E402
from jetpack.fetch.trust import TrustStore  # noqa: E402
from jetpack.schema import ImageManifest, parse_image_manifest  # noqa: E402
from tests.net import KeyMaker, Repo, Served, Server, TestCA  # noqa: E402

JETPACK = str(REPO / ".venv" / "bin" / "jetpack")
NAME = "localhost/bench"


def rename(manifest: ImageManifest) -> ImageManifest:
    doc = manifest.to_json()
    doc["name"] = NAME
    labels = {**dict(manifest.labels.items()), "version": "1.0.0", **host_labels()}
    doc["labels"] = [{"name": k, "value": v} for k, v in labels.items()]
    return parse_image_manifest(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "jetpack-bench")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("fetch_bench.py: needs curl (apt-get install curl)")
    args.cache.mkdir(parents=True, exist_ok=True)
    source = image(args.cache)
    aci = args.cache / "bench-named.aci"
    if not aci.exists():
        patch_aci(source, aci, rename, overwrite=True)
    body = aci.read_bytes()

    work = Path(tempfile.mkdtemp(prefix="jetpack-fetch-bench-", dir="/dev/shm"))
    try:
        ca = TestCA(work)
        (work / "gnupg").mkdir(mode=0o700)
        key = KeyMaker(work / "gnupg").make("Bench <bench@example.com>")
        path = f"/images/{NAME}-1.0.0-{host_labels()['os']}-{host_labels()['arch']}.aci"
        repo = Repo()
        repo.files[path] = Served(body, etag='"bench-v1"')
        repo.files[path + ".asc"] = Served(key.sign(body), "text/plain")
        cert, pkey = ca.issue(("localhost", "127.0.0.1"))
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, pkey)
        server = Server(repo.app(), ctx).start()
        base = server.url
        template = f"{base}/images/{{name}}-{{version}}-{{os}}-{{arch}}.{{ext}}"
        page = f'<meta name="ac-discovery" content="{NAME} {template}">'.encode()
        repo.files["/bench?ac-discovery=1"] = Served(page, "text/html")
        TrustStore(work / "trust", work / "vendor").add(key.public, NAME)
        conf = work / "jetpack.toml"
        conf.write_text(
            f'[storage]\nbackend = "overlay"\n'
            f'[fetch]\nca-file = "{ca.ca_file}"\ndiscovery-port = {server.port}\n'
            f'[trust]\nlocal = "{work / "trust"}"\nvendor = "{work / "vendor"}"\n'
        )
        data = work / "data"
        print(f"image: {aci} ({len(body) / 2**20:.0f} MiB gzip), signed; best of {args.runs} runs")
        print(f"{'measure':<28} {'figure':>10} {'floor':>10} {'ratio':>8}")

        def fresh() -> None:
            shutil.rmtree(data, ignore_errors=True)
            (data / "root").mkdir(parents=True)

        fetch = [JETPACK, "--dir", str(data), "--config", str(conf), "fetch", "-q", f"{NAME}:1.0.0"]
        ours = best(args.runs, fresh, fetch)
        floor_cmd = (
            'curl -s --cacert "$1" "$2" | tee "$3/x.aci" | gunzip '
            '| tee >(sha512sum > /dev/null) | tar -x -C "$3/root"'
        )
        floor = best(
            args.runs,
            fresh,
            ["bash", "-c", floor_cmd, "bash", str(ca.ca_file), base + path, str(data)],
        )
        row("jetpack fetch (tmpfs)", ours, floor)
        mib_s = len(body) / 2**20 / ours
        print(f"{'':<28} {mib_s:.0f} MiB/s of gzip, signature checked while streaming")

        fresh()
        subprocess.run(fetch, check=True, stdout=subprocess.DEVNULL)
        hits = repo.hits(path)
        start = time.perf_counter()
        subprocess.run(fetch, check=True, stdout=subprocess.DEVNULL)
        again = time.perf_counter() - start
        print(
            f"second fetch, --pull-policy=new: {again:.3f} s, "
            f"image requests: {repo.hits(path) - hits}"
        )
        repo.files[path].cache_control = "max-age=3600"
        update = [*fetch[:-1], "--pull-policy=update", fetch[-1]]
        subprocess.run(update, check=True, stdout=subprocess.DEVNULL)  # 304 + max-age
        hits = repo.hits(path)
        start = time.perf_counter()
        subprocess.run(update, check=True, stdout=subprocess.DEVNULL)
        fresh_time = time.perf_counter() - start
        print(
            f"fetch --pull-policy=update, max-age fresh: {fresh_time:.3f} s, "
            f"image requests: {repo.hits(path) - hits}"
        )
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
