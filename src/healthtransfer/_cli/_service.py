"""Service and bundle commands: ``serve``, ``serve keys add``, ``audit export`` and ``bundle
inspect | keygen | sign | export``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import _guard, app

keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys for the service (`healthtransfer serve keys add`).")
# `serve BUNDLE` takes a positional argument, so click cannot also hold a `keys` sub-command
# under it; main() routes `serve keys ...` here instead.
app.add_typer(keys_app, name="serve-keys", hidden=True)


@app.command()
def serve(
    bundle: Path = typer.Argument(..., help="Bundle folder (OUT/bundle/<target> from `run` or `demo`)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; loopback by default."),
    port: int = typer.Option(8000, help="Port."),
    api_keys: Optional[Path] = typer.Option(None, "--api-keys", help="Key file from `healthtransfer serve keys add` (required unless --no-auth)."),
    audit_db: Optional[str] = typer.Option(None, "--audit-db", help="SQLite path or SQLAlchemy URL for the audit log."),
    trust: Optional[Path] = typer.Option(None, "--trust", help="Public key (PEM) or folder of keys whose signed bundles are served."),
    allow_unsigned: bool = typer.Option(False, "--allow-unsigned", help="Serve a bundle that is unsigned or signed by an unknown key."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No API keys: predict only, loopback only (local trials)."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="Host header to accept besides localhost/127.0.0.1/::1 (repeatable)."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="uvicorn worker processes (all share the audit log)."),
    audit_sync: str = typer.Option("normal", "--audit-sync", help="SQLite audit durability: normal (WAL, survives a service crash) or full (fsync every commit, survives power loss)."),
):
    """Start the decision-support service for BUNDLE (API, web page, audit log, drift monitor).

    Closed by default: create API keys first with `healthtransfer serve keys add KEYFILE --id NAME
    --scope predict`, and sign the bundle (`healthtransfer bundle sign`) to serve it with --trust.
    """

    def go():
        from ..serve import serve as run_server

        run_server(bundle, host=host, port=port, api_keys=api_keys, audit_db=audit_db,
                   trust=trust, allow_unsigned=allow_unsigned, no_auth=no_auth,
                   allowed_hosts=allowed_host, workers=workers, audit_sync=audit_sync)

    _guard(go)


@keys_app.command("add")
def keys_add(
    key_file: Path = typer.Argument(..., help="Key file to create or extend (stores only hashes)."),
    key_id: str = typer.Option(..., "--id", help="A name for the key, e.g. 'ward-3'."),
    scope: list[str] = typer.Option(["predict"], "--scope", help="predict and/or read (repeatable)."),
):
    """Create an API key; prints it once (only its hash is stored)."""

    def go():
        from ..serve import keys_add as add

        typer.echo(add(key_file, key_id, scope))

    _guard(go)


audit_app = typer.Typer(no_args_is_help=True, help="The prediction audit log.")
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    audit_db: str = typer.Argument(..., help="SQLite path or SQLAlchemy URL of the audit log."),
    out: Path = typer.Option(Path("audit.csv"), "--out", help="CSV file to write."),
):
    """Write the audit log to CSV."""

    def go():
        from ..serve import audit_export as export

        n = export(audit_db, out)
        typer.echo(f"Wrote {n} audit records to {out}.")

    _guard(go)


bundle_app = typer.Typer(no_args_is_help=True, help="Inspect, sign or export a model bundle.")
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("inspect")
def bundle_inspect(bundle: Path = typer.Argument(..., help="Bundle folder.")):
    """Verify a bundle and print its model card and input schema."""

    def go():
        from ..serve import bundle_inspect as inspect

        typer.echo(inspect(bundle))

    _guard(go)


@bundle_app.command("keygen")
def bundle_keygen(key: Path = typer.Argument(..., help="Private key file to create (mode 0600).")):
    """Create an Ed25519 signing key; its public key is written to KEY.pub.pem for other sites."""

    def go():
        from ..bundle import generate_keypair

        typer.echo(f"Wrote {key} (keep it private) and {generate_keypair(key)} (share it).")

    _guard(go)


@bundle_app.command("sign")
def bundle_sign(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    key: Path = typer.Option(..., "--key", help="Private key from `healthtransfer bundle keygen`."),
):
    """Verify BUNDLE and sign its manifest (which lists every file's sha256)."""

    def go():
        from ..bundle import sign_bundle

        typer.echo(f"Signed {bundle} with key {sign_bundle(bundle, key)}.")

    _guard(go)


@bundle_app.command("export")
def bundle_export(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write model.onnx beside the bundle."),
):
    """Export the bundle's model to ONNX where the model allows it."""

    def go():
        from ..serve import bundle_export_onnx

        typer.echo(f"Wrote {bundle_export_onnx(bundle)}")

    _guard(go)
