"""The trust store (rkt's layout, masking, prefixes) and signature checks, with real gpg keys."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.errors import TrustError
from jetpack.fetch.trust import TrustStore, format_fingerprint, normalize_fingerprint
from tests.fixtures import processes_mentioning
from tests.net import Key, KeyMaker

DATA = b"an image, byte for byte as served\n" * 100


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(tmp_path / "local", tmp_path / "vendor")


@pytest.fixture
def alice(gpg_keys: KeyMaker) -> Key:
    return gpg_keys.make("Alice <alice@example.com>")


@pytest.fixture
def bob(gpg_keys: KeyMaker) -> Key:
    return gpg_keys.make("Bob <bob@example.com>")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.aci"
    path.write_bytes(DATA)
    return path


def place(root: Path, prefix: str | None, key: Key, body: bytes | None = None) -> Path:
    """Put ``key`` (or ``body``) into a root by hand, as a vendor package would."""
    directory = root / "root.d" if prefix is None else root / "prefix.d" / prefix
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / key.fingerprint
    path.write_bytes(key.public if body is None else body)
    return path


def gpg(key_home: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gpg", "--homedir", str(key_home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", *argv],
        capture_output=True,
        check=True,
    )  # fmt: skip


# -- the trust matrix -----------------------------------------------------------------


def test_right_prefix_verifies(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, "example.com/app")
    signer = store.verify("example.com/app", image, alice.sign(DATA))
    assert signer.fingerprint == alice.fingerprint
    assert signer.prefix == "example.com/app"
    assert signer.uids == ("Alice <alice@example.com>",)
    assert signer.source == "local"


def test_nested_prefix_covers_names_below(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, "example.com")
    assert store.verify("example.com/team/app", image, alice.sign(DATA)).prefix == "example.com"


def test_root_key_covers_every_name(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, None)
    signer = store.verify("other.org/anything", image, alice.sign(DATA))
    assert (signer.prefix, signer.fingerprint) == (None, alice.fingerprint)


def test_unsigned(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, None)
    for empty in (b"", b"  \n"):
        with pytest.raises(
            TrustError, match=r"cannot verify example\.com/app: the image is unsigned"
        ):
            store.verify("example.com/app", image, empty)


def test_no_key_at_all_names_the_command(store: TrustStore, alice: Key, image: Path) -> None:
    with pytest.raises(TrustError) as caught:
        store.verify("example.com/app", image, alice.sign(DATA))
    message = str(caught.value)
    assert "no key is trusted for example.com/app" in message
    assert alice.fingerprint in message
    assert "run 'jetpack trust --prefix example.com/app'" in message
    assert "\n" not in message


def test_key_for_the_wrong_prefix(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, "example.com/other")
    with pytest.raises(TrustError, match=r"no key is trusted for example\.com/app"):
        store.verify("example.com/app", image, alice.sign(DATA))


def test_foobar_is_not_under_foo(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, "example.com/foo")
    with pytest.raises(TrustError, match=r"no key is trusted for example\.com/foobar"):
        store.verify("example.com/foobar", image, alice.sign(DATA))
    assert store.verify("example.com/foo/bar", image, alice.sign(DATA))
    assert [k.prefix for k in store.keys_for("example.com/foo")] == ["example.com/foo"]
    assert store.keys_for("example.com/foobar") == []
    assert store.keys_for("example.com") == []


def test_wrong_key_names_the_signer(store: TrustStore, alice: Key, bob: Key, image: Path) -> None:
    store.add(bob.public, "example.com/app")
    store.add(alice.public, "example.com/elsewhere")
    with pytest.raises(TrustError) as caught:
        store.verify("example.com/app", image, alice.sign(DATA))
    message = str(caught.value)
    assert f"signed by key {alice.fingerprint}, which is not trusted for example.com/app" in message
    assert "it is trusted only for example.com/elsewhere" in message
    assert "run 'jetpack trust --prefix example.com/app'" in message


def test_tampered_data(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, "example.com/app")
    signature = alice.sign(DATA)
    image.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(TrustError, match="the signature does not match the data"):
        store.verify("example.com/app", image, signature)


def test_corrupt_and_non_signatures(store: TrustStore, alice: Key, image: Path) -> None:
    store.add(alice.public, "example.com/app")
    good = alice.sign(DATA).decode()
    lines = good.splitlines()
    body = next(i for i, line in enumerate(lines) if line and not line.startswith("-----"))
    body = max(body, 2)
    flipped = lines[body][:10] + ("A" if lines[body][10] != "A" else "B") + lines[body][11:]
    corrupt = "\n".join([*lines[:body], flipped, *lines[body + 1 :]]).encode()
    for bad in (corrupt, b"hello, not a signature", alice.public, b"\x00\x01\x02"):
        with pytest.raises(TrustError, match=r"cannot verify example\.com/app: ") as caught:
            store.verify("example.com/app", image, bad)
        assert "\n" not in str(caught.value)
    with pytest.raises(TrustError, match="damaged or is not an OpenPGP signature"):
        store.verify("example.com/app", image, b"hello, not a signature")
    # Without any trusted key, garbage is still called garbage, not "untrusted signer".
    with pytest.raises(TrustError, match="damaged or is not an OpenPGP signature"):
        store.verify("other.org/app", image, b"hello, not a signature")


def test_binary_signature(store: TrustStore, alice: Key, image: Path) -> None:
    import gnupg

    store.add(alice.public, "example.com/app")
    signed = gnupg.GPG(gnupghome=str(alice.homedir)).sign(
        DATA, keyid=alice.fingerprint, detach=True, binary=True
    )
    assert store.verify("example.com/app", image, signed.data).fingerprint == alice.fingerprint


def test_vendor_key_is_used(store: TrustStore, alice: Key, image: Path) -> None:
    place(store.vendor, "example.com/app", alice)
    signer = store.verify("example.com/app", image, alice.sign(DATA))
    assert (signer.source, signer.prefix) == ("vendor", "example.com/app")


def test_empty_local_file_masks_the_vendor_key(store: TrustStore, alice: Key, image: Path) -> None:
    place(store.vendor, "example.com/app", alice)
    place(store.local, "example.com/app", alice, b"")
    assert store.keys_for("example.com/app") == []
    with pytest.raises(TrustError, match="no key is trusted"):
        store.verify("example.com/app", image, alice.sign(DATA))


def test_a_mask_works_only_at_its_own_place(store: TrustStore, alice: Key, image: Path) -> None:
    place(store.vendor, None, alice)
    place(store.local, "example.com/app", alice, b"")  # masks nothing: vendor has it at root
    assert store.verify("example.com/app", image, alice.sign(DATA)).prefix is None


def test_expired_key(store: TrustStore, gpg_keys: KeyMaker, image: Path) -> None:
    home = gpg_keys.homedir
    uid = "Expired <expired@example.com>"
    gpg(home, "--faked-system-time", "20200101T000000!", "--quick-gen-key", uid, "ed25519",
        "sign", "1d")  # fmt: skip
    listing = gpg(home, "--with-colons", "--list-keys", uid).stdout.decode()
    fp = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:")).lower()
    public = gpg(home, "--armor", "--export", fp).stdout
    sig = gpg(home, "--faked-system-time", "20200101T120000!", "--armor", "--detach-sign",
              "--local-user", fp, "--output", "-", str(image)).stdout  # fmt: skip
    key = Key(fp, public, home)
    with pytest.raises(TrustError, match=f"refusing the key {fp}: the key is expired"):
        store.add(public, "example.com/app")
    assert store.inspect(public).expired
    place(store.vendor, "example.com/app", key)  # shipped before it expired
    with pytest.raises(TrustError, match=rf"signed by {fp} \(Expired .*expired"):
        store.verify("example.com/app", image, sig)


def test_revoked_key(store: TrustStore, gpg_keys: KeyMaker, image: Path) -> None:
    key = gpg_keys.make("Revoked <revoked@example.com>")
    sig = key.sign(DATA)
    place(store.vendor, "example.com/app", key)
    assert store.verify("example.com/app", image, sig)
    certificate = (key.homedir / "openpgp-revocs.d" / f"{key.fingerprint.upper()}.rev").read_text()
    revocation = certificate.replace(":-----BEGIN", "-----BEGIN")
    subprocess.run(
        ["gpg", "--homedir", str(key.homedir), "--batch", "--import"],
        input=revocation.encode(),
        capture_output=True,
        check=True,
    )
    revoked = gpg(key.homedir, "--armor", "--export", key.fingerprint).stdout
    assert store.inspect(revoked).revoked
    with pytest.raises(TrustError, match="the key is revoked"):
        store.add(revoked, "example.com/app")
    place(store.vendor, "example.com/app", key, revoked)
    with pytest.raises(TrustError, match=rf"signed by {key.fingerprint} .*revoked"):
        store.verify("example.com/app", image, sig)


def test_a_key_file_must_hold_the_key_it_names(
    store: TrustStore, alice: Key, bob: Key, image: Path
) -> None:
    place(store.vendor, "example.com/app", alice, bob.public)
    with pytest.raises(TrustError, match=r"damaged trust store: .* does not hold the key"):
        store.verify("example.com/app", image, alice.sign(DATA))


# -- store operations -------------------------------------------------------------------


def test_add_writes_rkt_layout(store: TrustStore, alice: Key, bob: Key) -> None:
    old = os.umask(0o077)
    try:
        added = store.add(alice.public, "example.com/foo/bar")
        root = store.add(bob.public, None)
    finally:
        os.umask(old)
    assert added.path == store.local / "prefix.d/example.com/foo/bar" / alice.fingerprint
    assert root.path == store.local / "root.d" / bob.fingerprint
    assert added.uids == ("Alice <alice@example.com>",)
    for path in (added.path, root.path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert path.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
        assert b"PRIVATE" not in path.read_bytes()
    for directory in (store.local / "prefix.d", store.local / "prefix.d/example.com/foo"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    # Atomic: no temporary file is left next to the key.
    assert sorted(p.name for p in added.path.parent.iterdir()) == [alice.fingerprint]
    # The stored file is a key gpg reads back as the same one.
    assert store.inspect(added.path.read_bytes()).fingerprint == alice.fingerprint


def test_add_accepts_a_binary_key_and_stores_it_armored(store: TrustStore, alice: Key) -> None:
    binary = subprocess.run(
        ["gpg", "--homedir", str(alice.homedir), "--export", alice.fingerprint],
        capture_output=True,
        check=True,
    ).stdout
    added = store.add(binary, "example.com/app")
    assert added.path.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")


def test_add_replaces_a_mask(store: TrustStore, alice: Key, image: Path) -> None:
    place(store.vendor, "example.com/app", alice)
    place(store.local, "example.com/app", alice, b"")
    store.add(alice.public, "example.com/app")
    assert store.verify("example.com/app", image, alice.sign(DATA)).source == "local"


def test_inspect(store: TrustStore, alice: Key) -> None:
    info = store.inspect(alice.public)
    assert info.fingerprint == alice.fingerprint
    assert info.uids == ("Alice <alice@example.com>",)
    assert info.algorithm == "ed25519"
    assert info.created.tzinfo is not None
    assert (info.expires, info.revoked, info.expired) == (None, False, False)
    assert info.spaced_fingerprint.replace(" ", "") == alice.fingerprint.upper()


def test_list(store: TrustStore, alice: Key, bob: Key) -> None:
    assert store.list() == []
    store.add(alice.public, "example.com/app")
    store.add(bob.public, None)
    place(store.vendor, "vendor.org", alice)
    listed = [(k.prefix, k.fingerprint, k.source, k.uids) for k in store.list()]
    assert listed == [
        (None, bob.fingerprint, "local", ("Bob <bob@example.com>",)),
        ("example.com/app", alice.fingerprint, "local", ("Alice <alice@example.com>",)),
        ("vendor.org", alice.fingerprint, "vendor", ("Alice <alice@example.com>",)),
    ]


def test_list_ignores_stray_files(store: TrustStore, alice: Key) -> None:
    store.add(alice.public, "example.com/app")
    (store.local / "prefix.d/example.com/app/README").write_text("notes")
    (store.local / "root.d").mkdir()
    (store.local / "root.d/.tmp-half-written").write_text("x")
    assert [k.fingerprint for k in store.list()] == [alice.fingerprint]


def test_remove_local_everywhere(store: TrustStore, alice: Key, bob: Key) -> None:
    a1 = store.add(alice.public, "example.com/app").path
    a2 = store.add(alice.public, None).path
    store.add(bob.public, "example.com/other")
    assert store.remove(format_fingerprint(alice.fingerprint)) == [a2, a1]
    assert not a1.exists() and not a2.exists()
    assert not (store.local / "prefix.d/example.com/app").exists()  # pruned
    assert [k.fingerprint for k in store.list()] == [bob.fingerprint]
    with pytest.raises(TrustError, match="no such trusted key"):
        store.remove(alice.fingerprint)


def test_remove_masks_a_vendor_key(store: TrustStore, alice: Key) -> None:
    vendor = place(store.vendor, "example.com/app", alice)
    local = store.add(alice.public, "example.com/app").path
    assert store.remove(alice.fingerprint.upper()) == [local]
    assert local.read_bytes() == b""  # the mask
    assert vendor.read_bytes() == alice.public  # the vendor root is never written
    assert store.list() == []
    with pytest.raises(TrustError, match="no such trusted key"):
        store.remove(alice.fingerprint)


@pytest.mark.parametrize("bad", ["abc", "0x1234", "g" * 40, "9B362C1CEA798E18"])
def test_fingerprints_must_be_full(bad: str) -> None:
    with pytest.raises(TrustError, match="a fingerprint is 40 hexadecimal digits"):
        normalize_fingerprint(bad)


def test_fingerprint_spellings() -> None:
    fp = "8b86de38890ddb72918" + "67b025210bd8888182190"
    assert normalize_fingerprint("0x" + fp.upper()) == fp
    assert normalize_fingerprint(format_fingerprint(fp)) == fp
    assert format_fingerprint(fp) == "8B86 DE38 890D DB72 9186  7B02 5210 BD88 8818 2190"


def test_secret_key_is_refused(store: TrustStore, alice: Key) -> None:
    import gnupg

    secret = gnupg.GPG(gnupghome=str(alice.homedir)).export_keys(
        alice.fingerprint, secret=True, expect_passphrase=False
    )
    with pytest.raises(TrustError, match="refusing the key: it contains a secret key"):
        store.add(secret.encode(), None)
    with pytest.raises(TrustError, match="secret key"):
        store.inspect(secret.encode())
    assert not store.local.exists()


def test_two_keys_are_refused(store: TrustStore, alice: Key, bob: Key) -> None:
    with pytest.raises(TrustError, match=r"it holds 2 keys .*, not one"):
        store.add(alice.public + bob.public, "example.com/app")
    assert not store.local.exists()


@pytest.mark.parametrize("garbage", [b"", b"hello", b"\x99\x00\x01", b"-----BEGIN PGP PUBLIC"])
def test_garbage_is_not_a_key(store: TrustStore, garbage: bytes) -> None:
    with pytest.raises(TrustError, match="it is not an OpenPGP public key"):
        store.add(garbage, None)
    assert not store.local.exists()


@pytest.mark.parametrize("prefix", ["Example.com", "example.com/", "../etc", "a//b", "", "a b"])
def test_bad_prefix(store: TrustStore, alice: Key, prefix: str) -> None:
    with pytest.raises(TrustError, match=f"invalid prefix {prefix!r}"):
        store.add(alice.public, prefix)
    with pytest.raises(TrustError, match="invalid prefix"):
        store.keys_for(prefix)
    assert not store.local.exists()


def test_unwritable_local_root(tmp_path: Path, alice: Key) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = TrustStore(blocker / "trustedkeys", tmp_path / "vendor")
    with pytest.raises(TrustError, match=r"cannot create .*set trust.local"):
        store.add(alice.public, None)


# -- the user's GnuPG setup is never touched --------------------------------------------


def test_users_keyring_and_agent_untouched(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    alice: Key,
    bob: Key,
    image: Path,
) -> None:
    home = tmp_path / "home"
    user_gnupg = home / ".gnupg-custom"
    user_gnupg.mkdir(parents=True, mode=0o700)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GNUPGHOME", str(user_gnupg))
    monkeypatch.setenv("GPG_AGENT_INFO", str(user_gnupg / "S.gpg-agent:0:1"))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    store = TrustStore(tmp_path / "local", tmp_path / "vendor")

    store.inspect(alice.public)
    store.add(alice.public, "example.com/app")
    store.add(bob.public, None)
    store.list()
    store.verify("example.com/app", image, alice.sign(DATA))
    with pytest.raises(TrustError):
        store.verify("example.com/app", image, b"junk")

    assert sorted(p.name for p in home.iterdir()) == [".gnupg-custom"]
    assert list(user_gnupg.iterdir()) == []
    assert list(scratch.iterdir()) == []  # every throw-away GNUPGHOME was removed
    # No agent or dirmngr was started for a throw-away home.
    assert processes_mentioning(str(scratch)) == []


def test_verify_passes_the_path_to_gpg(
    store: TrustStore, alice: Key, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No copy of the (large) image: gpg is handed the file name itself.
    from jetpack.fetch import trust

    seen: list[str] = []
    original: Callable[..., object] = trust._Scratch.start_verify

    def spy(self: object, signature: Path, data: object) -> object:
        seen.append(str(data))
        return original(self, signature, data)

    monkeypatch.setattr(trust._Scratch, "start_verify", spy)
    store.add(alice.public, "example.com/app")
    store.verify("example.com/app", image, alice.sign(DATA))
    assert seen == [str(image)]


# -- streaming verification (while the image downloads) ---------------------------------


def _chunks(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_stream_good_and_tampered(store: TrustStore, alice: Key) -> None:
    store.add(alice.public, "example.com/app")
    signature = alice.sign(DATA)
    with store.verifier("example.com/app", signature) as check:
        for chunk in _chunks(DATA):
            check.write(chunk)
        assert check.finish().fingerprint == alice.fingerprint
    with store.verifier("example.com/app", signature) as check:
        for chunk in _chunks(DATA[:-1] + b"!"):
            check.write(chunk)
        with pytest.raises(TrustError, match="the signature does not match the data"):
            check.finish()
    with store.verifier("example.com/app", signature) as check:
        check.write(DATA[:100])  # a download cut short
        with pytest.raises(TrustError, match="does not match"):
            check.finish()


def test_stream_gpg_gives_up_early(store: TrustStore, alice: Key) -> None:
    # gpg exits at once on a garbage signature: writing on must not raise or hang.
    store.add(alice.public, "example.com/app")
    big = b"x" * (1 << 20)
    with store.verifier("example.com/app", b"garbage") as check:
        for _ in range(8):
            check.write(big)
        with pytest.raises(TrustError, match="not an OpenPGP signature"):
            check.finish()
    with store.verifier("other.org/app", alice.sign(DATA)) as check:  # no key at all
        check.write(big)
        with pytest.raises(TrustError, match=r"no key is trusted for other\.org/app"):
            check.finish()
    with pytest.raises(TrustError, match="unsigned"), store.verifier("example.com/app", b""):
        pass


def test_stream_abandoned_cleans_up(
    store: TrustStore, alice: Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    store.add(alice.public, "example.com/app")
    with pytest.raises(RuntimeError), store.verifier("example.com/app", alice.sign(DATA)) as check:
        check.write(DATA[:10])
        raise RuntimeError("the download failed")
    assert list(scratch.iterdir()) == []
