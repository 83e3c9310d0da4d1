"""Layer Lab's computation (never imports streamlit). Where each number is computed:

report.json field                    computed by
-----------------------------------  ------------------------------------------------------------
model (card, fingerprint)            loading.LoadedModel.card, loading.fingerprint_model
corpus (windows, tokens)             corpus.make_windows (protocol), pipeline.corpus_info
evaluation (the split)               evaluation.resolve -> Split.info (calibration / evaluation windows)
perplexity                           collect.Perplexity (reducer) <- collect.token_nll
similarity.cosine_matrix, cka        similarity.SimilarityReducer -> SimilarityResult.cos_all / cka_all
similarity.block_influence           similarity.block_influence (SimilarityResult.block_influence)
similarity.angular_best_block        similarity.best_blocks (on SimilarityResult.ang_last)
sublayers.*                          sublayers.SublayerReducer -> SublayerResult
sparsity.*                           sparsity.SparsityReducer (in-hook counts) -> SparsityResult.at_eps/at_p
logit_lens.*                         lens.LensReducer (lens.layer_signals, hooks.readout) -> LensResult
early_exit.*                         early_exit.ExitAccumulator -> ExitResult; early_exit.per_window_tolerance_exit
removal.block/attn/mlp_ppl           pruning.removal.exact_sweep <- pruning.ablation.removal_nll
removal.estimate                     pruning.removal.attribution_estimate (gradient x activation)
plan (of a pruned checkpoint)        pruning.apply.checkpoint_plan (its layer-lab-plan.json)
curves.*                             pruning.curves_run.pruning_curves -> pruning.curves.PruningCurves
                                     (selections, window_nll, build_curves; greedy.iterative_greedy);
                                     report.curves_section
dynamic_depth.*                      pruning.dynamic_depth.dynamic_depth (min_total_weight: the exact
                                     multiple-choice knapsack; exit_nll: per-window early-exit NLL)
results (typed, for the app)         report.build_report; report.open_report is the one converter back

Which architectures are verified, what a removal means in each and the load-time checks:
architectures (FAMILIES, structure, removal_notes, check_model). Batch sizes: the memory
budget settings.batch_tokens <- collect.batch_tokens_for.

How it flows: loading (model, once per name/device/dtype) -> corpus (token windows) ->
collect.run_pass (the ONE instrumented forward; hooks.capture records the residual
stream, sublayer outputs and MLP activations) -> reducers (similarity, sublayers,
sparsity, lens, perplexity: running sums per batch) -> frozen results (pipeline.Analysis,
cached on disk; the lens as its own entry, so a lens-free pass can come first and the
lens later without redoing it) -> report (report.build_report) and figures/ (plotly,
figures/scales for log axes, clipped bars, non-overlapping labels) -> the app's pages.

Pruning (analysis/): ablation (Removal, zeroing hooks, replaying blocks with the
arguments the model's forward gave them), removal (exact 3L sweep, attribution estimate),
playground (live evaluation from cached clean residuals), prompts (top-k, greedy
generation), costs (parameters, FLOPs), presets (suggested removals), plan / plan_check /
mergekit (pruning-plan JSON, validation, MergeKit YAML), apply (a real smaller checkpoint),
greedy (exact iterative greedy), curves / curves_run (pruning curves on held-out windows),
dynamic_depth (the per-sequence oracle). Which windows calibrate and which evaluate:
evaluation (EvalSpec, Split, part_windows).
Command line: analysis/cli/ (`python -m analysis ...`).
"""
