//! Parameter groups (vision encoder, merger, language model), the learning-rate schedule
//! (linear warmup, cosine decay) and clipping by the global gradient norm.
//!
//! Burn's built-in clipping (`GradientClipping::Norm`) clips each tensor by its own norm;
//! the usual practice (PyTorch's `clip_grad_norm_`) scales every gradient by one factor so
//! that the norm over all of them is at most the limit, which keeps the update's direction.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use nuri_model::NuriModel;

use crate::config::OptimConfig;

/// The groups a model's parameters fall in, each with its own learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Vision,
    Merger,
    Language,
}

pub const GROUPS: [Group; 3] = [Group::Vision, Group::Merger, Group::Language];

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Vision => "vision",
            Group::Merger => "merger",
            Group::Language => "language",
        }
    }

    /// Peak learning rate of the group.
    pub fn peak_lr(self, config: &OptimConfig) -> f64 {
        match self {
            Group::Vision => config.lr_vision,
            Group::Merger => config.lr_merger,
            Group::Language => config.lr,
        }
    }
}

struct Ids(Vec<ParamId>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.id);
    }
}

fn ids_of<M: Module>(module: &M) -> Vec<ParamId> {
    let mut v = Ids(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Parameter ids of a group.
pub fn group_params(model: &NuriModel, group: Group) -> Vec<ParamId> {
    let visual = model.model.visual.as_ref();
    match group {
        Group::Vision => visual.map_or_else(Vec::new, |visual| {
            let mut ids = ids_of(&visual.patch_embed);
            ids.extend(ids_of(&visual.blocks));
            ids
        }),
        // The merger, and the projector after it where the family has one.
        Group::Merger => {
            let mut ids = visual.map_or_else(Vec::new, |visual| ids_of(&visual.merger));
            if let Some(projector) = &model.model.projector {
                ids.extend(ids_of(projector));
            }
            ids
        }
        Group::Language => {
            let mut ids = ids_of(&model.model.language_model);
            if let Some(head) = &model.lm_head {
                ids.extend(ids_of(head));
            }
            ids
        }
    }
}

/// The schedule's multiplier at `step` (0-based) of `total`: linear warmup from 1/warmup to
/// 1, then cosine from 1 down to `min_ratio` at the last step.
pub fn lr_factor(step: usize, total: usize, warmup: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    cosine((step - warmup) as f64 / span as f64, min_ratio)
}

/// The cosine part of the schedule at `progress` (0 → 1, clamped) of the decay.
pub fn cosine(progress: f64, min_ratio: f64) -> f64 {
    let progress = progress.clamp(0.0, 1.0);
    min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.total += f64::from(g.powf_scalar(2.0).sum().into_scalar::<f32>());
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm over every gradient in `groups`.
pub fn global_norm(model: &NuriModel, groups: &[GradientsParams]) -> f64 {
    let mut total = 0.0;
    for grads in groups {
        let mut v = SquaredNorm { grads, total: 0.0 };
        model.visit(&mut v);
        total += v.total;
    }
    total.sqrt()
}

/// Scales every gradient so the global norm is at most `max_norm` (no-op when it already
/// is, or when `max_norm` is 0). Returns the norm before clipping.
pub fn clip_global_norm(model: &NuriModel, groups: &mut [GradientsParams], max_norm: f64) -> f64 {
    let norm = global_norm(model, groups);
    if max_norm > 0.0 && norm > max_norm {
        // PyTorch's clip_grad_norm_ adds 1e-6 to the norm.
        let factor = max_norm / (norm + 1e-6);
        for grads in groups.iter_mut() {
            model.visit(&mut Scale { grads, factor });
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        assert_eq!(lr_factor(0, 100, 10, 0.1), 0.1);
        assert_eq!(lr_factor(9, 100, 10, 0.1), 1.0);
        assert!((lr_factor(10, 100, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_factor(55, 100, 10, 0.1) - 0.55).abs() < 1e-12);
        assert!((lr_factor(100, 100, 10, 0.1) - 0.1).abs() < 1e-12);
        assert!(lr_factor(30, 100, 10, 0.0) > lr_factor(31, 100, 10, 0.0));
    }
}
