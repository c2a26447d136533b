let normalizationOperators: [(String, any Operator.Type)] = []
