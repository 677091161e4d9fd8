"""tools/misc/plot_sequence.py: a config's training sequence, drawn with the
plan options ``build_runner`` derives from its objectives."""
from tests.tools import run_tool

PNG = b'\x89PNG\r\n\x1a\n'
UNO = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'


def test_the_figure_follows_the_objectives(tmp_path, monkeypatch, capsys):
    def draw(*options):
        out = tmp_path / f'seq{len(options)}.png'
        code, printed, err = run_tool(
            'misc/plot_sequence', [UNO, '--out', str(out), '--cfg-options',
                                   'model.metaquery.num_queries=4',
                                   *options], monkeypatch, capsys)
        assert code == 0, err
        assert out.read_bytes()[:8] == PNG
        return printed.split('segments ')[1].split()

    assert draw() == ['text', '|', 'noisy_latent', '|', 'caption', '|',
                      'metaquery']
    # an objective at weight 0 asks the data for nothing
    assert draw('objectives.caption.weight=0') == [
        'text', '|', 'noisy_latent', '|', 'metaquery']
