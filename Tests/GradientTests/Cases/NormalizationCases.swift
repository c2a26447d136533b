import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Normalization.swift.
let normalizationCases: [GradientCase] = []
