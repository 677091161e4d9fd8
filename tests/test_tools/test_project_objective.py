"""A new objective in a project trains with the core tools, no uno/ edit.

The walkthrough of ``docs/extending.md`` ("Outside uno/: a project") done
by a test, as a new user would: a package outside the repository
registers an objective into ``uno.registry.OBJECTIVES``, a config
inherits a core config and imports the package with ``custom_imports``,
and ``tools/train.py`` trains it and logs its loss.

``tools/train.py`` runs in-process with the project's folder first on
``sys.path`` (as ``PYTHONPATH`` would put it); the fixture forgets the
package and its registration afterwards.
"""
import sys

import pytest

from tests.conftest import REPO, mlflow_store
from tests.tools import logged_rows, run_tool

pytestmark = pytest.mark.slow

OBJECTIVE = '''
"""Mean absolute velocity error: a one-file proxy objective."""
from uno.objectives import BaseObjective, ObjectiveResult
from uno.registry import OBJECTIVES


@OBJECTIVES.register_module()
class VelocityL1Objective(BaseObjective):
    """L1 between predicted and target velocity, per noisy token.

    Args:
        weight (float): Loss weight. Defaults to 1.0.
    """
    requires = ('velocity', )

    def forward(self, outputs, batch, noisy=None, state=None):
        target = noisy.target  # (N_noisy, C)
        per_item = (outputs.velocity.float() - target).abs().mean(-1)
        return ObjectiveResult(per_item.sum(),
                               per_item.new_tensor(float(per_item.numel())))
'''

CONFIG = '''
_base_ = '{repo}/configs/sft/sft_mot-tiny_1xb8-iter200_shapes.py'
custom_imports = dict(imports=['my_proxy'], allow_failed_imports=False)
objectives = dict(l1=dict(type='VelocityL1Objective', weight=0.5))
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder outside the repository with the ``my_proxy``
    package, first on ``sys.path``; ``my_proxy`` and what it registered
    are gone afterwards."""
    from uno.registry import OBJECTIVES
    folder = tmp_path / 'myproject'
    (folder / 'my_proxy').mkdir(parents=True)
    (folder / 'my_proxy' / '__init__.py').write_text(OBJECTIVE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv('MLFLOW_TRACKING_URI',
                       mlflow_store(tmp_path / 'mlflow.db'))
    assert 'my_proxy' not in sys.modules
    yield folder
    sys.modules.pop('my_proxy', None)
    OBJECTIVES._module_dict.pop('VelocityL1Objective', None)


def test_new_project_objective_trains_with_core_tools(project, tmp_path,
                                                      monkeypatch, capsys):
    config = project / 'l1_mot-tiny_1xb8-iter200_shapes.py'
    config.write_text(CONFIG.format(repo=REPO))
    work_dir = tmp_path / 'work'
    code, _, err = run_tool('train', [
        str(config), '--work-dir', str(work_dir), '--cfg-options',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=1000',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2'
    ], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    logged = [r for r in logged_rows(work_dir) if 'loss/l1' in r]
    assert len(logged) == 2
    assert all(r['weight/l1'] == 0.5 and r['loss/l1'] > 0 for r in logged)
    # the total is the weighted sum of the objectives' losses
    for r in logged:
        assert r['loss'] == pytest.approx(
            r['loss/flow'] * r['weight/flow'] + 0.5 * r['loss/l1'], rel=1e-4)


def test_unknown_project_objective_names_close_matches(project, tmp_path,
                                                       monkeypatch, capsys):
    config = project / 'typo.py'
    config.write_text(CONFIG.format(repo=REPO).replace(
        "type='VelocityL1Objective'", "type='VelocityL1Objectiv'"))
    code, _, err = run_tool('train', [
        str(config), '--work-dir', str(tmp_path / 'work')], monkeypatch,
        capsys)
    assert code == 2, err[-3000:]
    assert 'VelocityL1Objective' in err
