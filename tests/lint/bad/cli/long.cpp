// One function of 13 lines (as clang-tidy counts them), for check-sizes --max-function-lines 10.
int too_long(int x) {
  x += 1;
  x += 2;
  x += 3;
  x += 4;
  x += 5;
  x += 6;
  x += 7;
  x += 8;
  x += 9;
  x += 10;
  x += 11;
  return x;
}

// And one that fits.
int short_enough(int x) {
  return x + 1;
}
