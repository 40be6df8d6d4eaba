"""Pretrain, or continue pretraining, a Chinese BERT on plain text.

Domain-adaptive pretraining before fine-tuning: masked language modelling
(`--objective mlm`, optionally `--whole-word` masking of jieba words as in
Chinese BERT-wwm), UniLM seq2seq on (span, next span) pairs cut from each
document (`--objective unilm`), or a per-batch mix of the two
(`--objective mix --unilm-ratio 0.5`). Text files hold one document a line.

The run directory `--out` gets `log.jsonl` (step, loss, tokens/s every
`--log-every` steps), a checkpoint every `--checkpoint-every` steps (the
same command again resumes after it) and, at the end, `model/`: config.json,
the simplified vocab.txt and model.safetensors, which
`tasks/csl_title.py --model-dir OUT/model` fine-tunes directly.

Usage:
    python tasks/pretrain.py \\
        --vocab ../shared/vocab/bert-base-chinese/vocab.txt \\
        --text ../shared/data/csl_corpus/abstracts.txt \\
        ../shared/data/csl_corpus/titles.txt --whole-word --out runs/pretrain
    python tasks/pretrain.py --init chinese_wwm_L-12_H-768_A-12 \\
        --text ../shared/data/csl_corpus/abstracts.txt --objective mix \\
        --lr 5e-5 --out runs/dapt-wwm
"""

from tasks.lib.cli import run_main
from tasks.lib.launch import check_launch
from tasks.lib.launch import stops_with_peers
from tasks.lib.pretraining_options import build_parser


def main(argv=None):
    """Parse, then pretrain; bad input ends in one line on stderr (exit
    status 2) before anything is trained or written."""
    args = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    run_main(check_launch, args, args.batch_size, prog="pretrain.py")
    # Deferred: Keras starts with the run, once the command line is read.
    from tasks.lib.pretraining_run import run

    return run_main(stops_with_peers(run), args, prog="pretrain.py")


if __name__ == "__main__":
    main()
