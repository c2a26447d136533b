let indexingOperators: [(String, any Operator.Type)] = []
