let poolingOperators: [(String, any Operator.Type)] = []
