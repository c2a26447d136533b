import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Shape.swift.
let shapeCases: [GradientCase] = []
