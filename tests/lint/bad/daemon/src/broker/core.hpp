// The core including the edge above it: check-layers.sh must name this line.
#pragma once

#include "net/edge.hpp"
