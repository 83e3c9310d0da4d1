"""Layer Lab's computation (never imports streamlit), in packages by layer, bottom to top:
core, model, data, measure, ablate, playground, plans, tasks, search, heal, reporting, cli. A
module imports its own package and the ones below it (tests/unit/test_layers.py).

Where each number of report.json is computed:

report.json field                    computed by
-----------------------------------  ------------------------------------------------------------
model (card, fingerprint)            model.loading.LoadedModel.card, model.loading.fingerprint_model
                                     (weights: model.sources.weights_note)
corpus (windows, tokens)             data.corpus.make_windows (protocol), measure.pipeline.corpus_info
evaluation (the split)               data.evaluation.resolve -> Split.info (calibration / evaluation windows)
perplexity                           measure.collect.Perplexity (reducer) <- measure.collect.token_nll
similarity.cosine_matrix, cka        measure.similarity.SimilarityReducer -> SimilarityResult.cos_all / cka_all
similarity.block_influence           measure.similarity.block_influence (SimilarityResult.block_influence)
similarity.angular_best_block        measure.similarity.best_blocks (on SimilarityResult.ang_last)
sublayers.*                          measure.sublayers.SublayerReducer -> SublayerResult
sparsity.*                           measure.sparsity.SparsityReducer (in-hook counts) -> SparsityResult
logit_lens.*                         measure.lens.LensReducer (lens.layer_signals, model.hooks.readout)
early_exit.*                         measure.early_exit.ExitAccumulator -> ExitResult;
                                     early_exit.per_window_tolerance_exit
removal.block/attn/mlp_ppl           ablate.sweep.exact_sweep <- ablate.replay.removal_nll
removal.estimate                     ablate.sweep.attribution_estimate (gradient x activation)
plan (of a pruned checkpoint)        plans.apply.checkpoint_plan (its layer-lab-plan.json)
curves.*                             search.curves_run.pruning_curves -> search.curves.PruningCurves
                                     (selections, window_nll, build_curves; search.greedy.iterative_greedy);
                                     reporting.report.curves_section
dynamic_depth.*                      search.dynamic_depth.dynamic_depth (min_total_weight: the exact
                                     multiple-choice knapsack; exit_nll: per-window early-exit NLL)
results (typed, for the app)         reporting.report.build_report; reporting.report.open_report is the
                                     one converter back

Which architectures are verified, what a removal means in each and the load-time checks:
model.architectures (FAMILIES, structure, removal_notes, check_model). Batch sizes: the
memory budget core.settings.batch_tokens <- measure.collect.batch_tokens_for.

How it flows: model.loading (once per name/device/dtype) -> data.corpus (token windows)
-> measure.collect.run_pass (the ONE instrumented forward; model.hooks.capture records
the residual stream, sublayer outputs and MLP activations) -> reducers (similarity,
sublayers, sparsity, lens, perplexity: running sums per batch) -> frozen results
(measure.pipeline.Analysis, cached on disk through core.results.Result; the lens as its
own entry) -> reporting (report.json, the HTML report, figures/) -> the app's pages.

Removals (ablate/): replay keeps one clean forward's residuals and replays blocks with
the arguments the model's forward gave them; sweep measures every single removal
exactly; memo shares measured removals across sessions; progressive gives an estimate
first. On top: playground/ (live toggles, generation, their bench), plans/ (JSON, checks, apply,
MergeKit), tasks/ (task accuracy by lm-eval, in-process with removals or by path), search/
(presets, greedy, curves, dynamic depth), heal/ (LoRA healing).
Command line: analysis/cli/ (`python -m analysis ...`).
"""
