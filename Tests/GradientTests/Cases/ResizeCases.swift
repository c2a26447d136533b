import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Resize.swift.
let resizeCases: [GradientCase] = []
