let detectionOperators: [(String, any Operator.Type)] = []
