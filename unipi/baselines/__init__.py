"""Baselines scored by the same harness as UniPi: language-conditioned Transformer BC.

    config.py   BCConfig, section ``bc`` of the experiment config
    bc.py       BCPolicy: frame + instruction tokens -> a chunk of actions
    data.py     BCDataset: demonstration steps with their next actions
    train.py    train_bc (``unipi train bc``): resumable, exports a model folder
    agent.py    BCAgent (``unipi eval --model DIR`` on a BC folder)
"""
