// Stands for a header of the network edge.
#pragma once

struct Edge {};
