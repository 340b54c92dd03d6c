"""Bases and adapters by Hugging Face Hub id, resolved from a cache built in the Hub's own layout."""

import shutil

import pytest
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.export import build_recipe, read_recipe, recipe_base, write_recipe
from osrm_gui.core.inputs import hub
from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.inputs.models import load_base
from osrm_gui.core.merge.spec import MergeSpec
from tests.conftest import add_to_hub_cache


@pytest.fixture(autouse=True)
def offline_policy(monkeypatch):
    """Each test starts offline, as the CLI and the app do, and leaves the process as it found it."""
    monkeypatch.setattr(hub._Policy, "online", False)
    monkeypatch.setattr(hub._Policy, "owns_variable", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_parse_hub_id():
    assert hub.parse_hub_id("acme/tiny") == ("acme/tiny", None)
    assert hub.parse_hub_id("acme/tiny@v1.0") == ("acme/tiny", "v1.0")
    assert hub.parse_hub_id("acme/tiny@refs/pr/3") == ("acme/tiny", "refs/pr/3")
    for not_an_id in ("tiny", "/abs/path", "./acme/tiny", "a/b/c", "acme/", "acme/tiny@", "~/x/y"):
        assert hub.parse_hub_id(not_an_id) is None, not_an_id


def test_adapter_by_id_equals_the_folder_it_came_from(hub_cache, tiny_adapters):
    commit = add_to_hub_cache(hub_cache, "acme/colour-lora", tiny_adapters[0])
    by_id = load_adapter("acme/colour-lora")
    direct = load_adapter(tiny_adapters[0])
    assert by_id.path == hub_cache / "models--acme--colour-lora" / "snapshots" / commit
    assert by_id.hub_id == f"acme/colour-lora@{commit}"
    assert by_id.content_hash == direct.content_hash
    assert by_id.layers.keys() == direct.layers.keys()
    for name, layer in direct.layers.items():
        assert torch.equal(by_id.layers[name].A, layer.A) and torch.equal(by_id.layers[name].B, layer.B)
    assert direct.hub_id is None


def test_adapter_name_comes_from_the_repository_not_the_commit_folder(hub_cache, tiny_base_dir, tiny_adapters, tmp_path):
    # an adapter without metadata is named after its folder; a snapshot folder is only a commit hash
    bare = tmp_path / "bare"
    shutil.copytree(tiny_adapters[1], bare)
    (bare / "osrm_adapter.json").unlink()
    add_to_hub_cache(hub_cache, "acme/animal-lora", bare)
    assert load_adapter("acme/animal-lora").name == "animal-lora"


def test_revision_by_tag_and_by_commit(hub_cache, tiny_adapters):
    first = add_to_hub_cache(hub_cache, "acme/lora", tiny_adapters[0], ref="v1")
    second = add_to_hub_cache(hub_cache, "acme/lora", tiny_adapters[1], ref="main")
    assert load_adapter("acme/lora@v1").content_hash == load_adapter(tiny_adapters[0]).content_hash
    assert load_adapter("acme/lora").content_hash == load_adapter(tiny_adapters[1]).content_hash
    assert load_adapter(f"acme/lora@{first}").hub_id == f"acme/lora@{first}"
    assert load_adapter(f"acme/lora@{second}").path.name == second


def test_base_by_id(hub_cache, tiny_base_dir):
    commit = add_to_hub_cache(hub_cache, "acme/tiny-bert", tiny_base_dir)
    base = load_base("acme/tiny-bert")
    assert base.name == "tiny-bert" and base.hub_id == f"acme/tiny-bert@{commit}"
    assert base.fingerprint == load_base(tiny_base_dir).fingerprint


def test_uncached_id_offline_is_a_clear_error(hub_cache):
    with pytest.raises(OsrmError) as error:
        load_adapter("acme/not-downloaded")
    message = str(error.value)
    assert message.startswith("acme/not-downloaded: ") and "\n" not in message
    assert "not in the Hugging Face cache" in message and str(hub_cache) in message and "--online" in message
    with pytest.raises(OsrmError, match="no revision|not in the Hugging Face cache"):
        load_adapter("acme/not-downloaded@v9")


def test_unknown_revision_of_a_cached_repo_offline(hub_cache, tiny_adapters):
    add_to_hub_cache(hub_cache, "acme/lora", tiny_adapters[0])
    with pytest.raises(OsrmError, match="acme/lora@v2: .*not in the Hugging Face cache"):
        load_adapter("acme/lora@v2")


def test_online_but_environment_forces_offline(hub_cache):
    hub.configure(online=True)  # HF_HUB_OFFLINE=1 came from the user's environment: it wins
    assert hub.downloads_allowed()
    with pytest.raises(OsrmError, match="HF_HUB_OFFLINE in your environment forbids"):
        load_adapter("acme/not-downloaded")


def test_configure_owns_the_variable_only_when_the_user_did_not_set_it(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.configure(online=True)
    assert constants.HF_HUB_OFFLINE is False and hub.os.environ["HF_HUB_OFFLINE"] == "0"
    hub.configure(online=False)
    assert constants.HF_HUB_OFFLINE is True and hub.os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_local_folder_wins_over_an_id_of_the_same_spelling(hub_cache, tiny_adapters, tmp_path, monkeypatch):
    add_to_hub_cache(hub_cache, "acme/lora", tiny_adapters[1])
    shutil.copytree(tiny_adapters[0], tmp_path / "acme" / "lora")
    monkeypatch.chdir(tmp_path)
    adapter = load_adapter("acme/lora")
    assert adapter.hub_id is None and adapter.content_hash == load_adapter(tiny_adapters[0]).content_hash


def test_recipe_replays_from_the_hub_id_on_another_cache(hub_cache, tiny_base_dir, tiny_adapters, tmp_path, monkeypatch):
    from huggingface_hub import constants

    add_to_hub_cache(hub_cache, "acme/colour-lora", tiny_adapters[0])
    add_to_hub_cache(hub_cache, "acme/tiny-bert", tiny_base_dir)
    base, adapter = load_base("acme/tiny-bert"), load_adapter("acme/colour-lora")
    recipe_path = write_recipe(build_recipe(base, [adapter], MergeSpec("task_arithmetic")), tmp_path / "r.json")
    # the same ids on a machine whose cache lies elsewhere
    moved = tmp_path / "other-cache"
    shutil.copytree(hub_cache, moved, symlinks=True)
    shutil.rmtree(hub_cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(moved))
    recipe, adapters, _ = read_recipe(recipe_path)
    assert adapters[0].hub_id == adapter.hub_id and adapters[0].path.is_relative_to(moved)
    assert recipe_base(recipe) == base.hub_id
