"""A build's settings from WORKSPACE.toml and the command line, as the stores and runners take them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbuild.model.workspace import Workspace, check_remote_url
from mbuild.schedule.status import BuildOptions

if TYPE_CHECKING:
    from mbuild.stores.remote import RemoteConfig


def remote_config(workspace: Workspace, options: BuildOptions) -> RemoteConfig | None:
    """The remote cache to use: WORKSPACE.toml's [remote], overridden by the command line."""
    settings = workspace.settings.remote
    url = settings.url if options.remote_url is None else options.remote_url
    if not url:
        return None
    if options.remote_url:
        check_remote_url(url, "--remote-cache")
    upload = settings.upload if options.remote_upload is None else options.remote_upload
    from mbuild.stores.remote import RemoteConfig

    return RemoteConfig(url, upload=upload, timeout=settings.timeout, max_failures=settings.max_failures, storage_options=dict(settings.options))
