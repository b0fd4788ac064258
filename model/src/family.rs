//! The model families Nuri loads, named as their checkpoints name them (`config.json`'s
//! `model_type`), and what differs between them besides numbers: whether there is a vision
//! tower, how positions are counted, and where each checkpoint keeps its tensors.

use serde::{Deserialize, Serialize};

/// A family of checkpoints with one module tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Family {
    /// Qwen2-VL (`Qwen2VLForConditionalGeneration`): Qwen2-VL ViT, Qwen2, M-RoPE.
    #[default]
    #[serde(rename = "qwen2_vl")]
    Qwen2Vl,
    /// Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`): windowed ViT, Qwen2, M-RoPE with
    /// absolute time for videos.
    #[serde(rename = "qwen2_5_vl")]
    Qwen2_5Vl,
    /// LG's EXAONE 4.5 (`Exaone4_5_ForConditionalGeneration`): Qwen2.5-VL ViT with grouped
    /// key/value heads, the EXAONE 4 decoder, 1D positions.
    #[serde(rename = "exaone4_5")]
    Exaone4_5,
    /// Naver's HyperCLOVA X SEED Vision/Think (`HyperCLOVAXVisionV2ForConditionalGeneration`):
    /// Qwen2.5-VL ViT and a linear projector, the HyperCLOVA X decoder, 1D positions.
    #[serde(rename = "hyperclovax_vision_v2")]
    HyperClovaXVisionV2,
    /// EXAONE 4.0 text (`Exaone4ForCausalLM`).
    #[serde(rename = "exaone4")]
    Exaone4,
    /// HyperCLOVA X text (`HyperCLOVAXForCausalLM`).
    #[serde(rename = "hyperclovax")]
    HyperClovaX,
}

impl Family {
    /// Every family, in the order the README lists them.
    pub const ALL: [Family; 6] = [
        Family::Qwen2Vl,
        Family::Qwen2_5Vl,
        Family::Exaone4_5,
        Family::HyperClovaXVisionV2,
        Family::Exaone4,
        Family::HyperClovaX,
    ];

    /// `config.json`'s `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Qwen2Vl => "qwen2_vl",
            Family::Qwen2_5Vl => "qwen2_5_vl",
            Family::Exaone4_5 => "exaone4_5",
            Family::HyperClovaXVisionV2 => "hyperclovax_vision_v2",
            Family::Exaone4 => "exaone4",
            Family::HyperClovaX => "hyperclovax",
        }
    }

    /// `config.json`'s `architectures[0]`, as transformers writes it.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Qwen2Vl => "Qwen2VLForConditionalGeneration",
            Family::Qwen2_5Vl => "Qwen2_5_VLForConditionalGeneration",
            Family::Exaone4_5 => "Exaone4_5_ForConditionalGeneration",
            Family::HyperClovaXVisionV2 => "HyperCLOVAXVisionV2ForConditionalGeneration",
            Family::Exaone4 => "Exaone4ForCausalLM",
            Family::HyperClovaX => "HyperCLOVAXForCausalLM",
        }
    }

    /// The family a `model_type` names. Naver's original HyperCLOVA X Vision checkpoints say
    /// `"vlm"` (transformers maps it the same way).
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        if model_type == "vlm" {
            return Some(Family::HyperClovaXVisionV2);
        }
        Self::ALL.into_iter().find(|f| f.model_type() == model_type)
    }

    /// The family an architecture name (`architectures` in `config.json`) names.
    pub fn from_architecture(architecture: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.architecture() == architecture)
    }

    /// The supported `model_type`s, for error messages.
    pub fn supported() -> String {
        Self::ALL.map(Family::model_type).join(", ")
    }

    /// Whether checkpoints of this family have a vision tower.
    pub fn has_vision(self) -> bool {
        !matches!(self, Family::Exaone4 | Family::HyperClovaX)
    }

    /// Whether positions are M-RoPE's three streams (Qwen) rather than 1D.
    pub fn mrope(self) -> bool {
        matches!(self, Family::Qwen2Vl | Family::Qwen2_5Vl)
    }

    /// Whether the vision tower's output goes through a separate linear projector.
    pub fn has_projector(self) -> bool {
        self == Family::HyperClovaXVisionV2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_and_architectures_name_one_family_each() {
        for family in Family::ALL {
            assert_eq!(Family::from_model_type(family.model_type()), Some(family));
            assert_eq!(
                Family::from_architecture(family.architecture()),
                Some(family)
            );
            let json = serde_json::to_string(&family).expect("serialize");
            assert_eq!(json, format!("\"{}\"", family.model_type()));
        }
        assert_eq!(Family::from_model_type("llama"), None);
        assert!(Family::supported().contains("exaone4_5"));
    }
}
