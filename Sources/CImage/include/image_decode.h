#ifndef DISTILL_IMAGE_DECODE_H
#define DISTILL_IMAGE_DECODE_H
#include <stddef.h>

/// Decodes a PNG or JPEG file (chosen by its magic bytes) to 8-bit RGB, row-major, 3 bytes per
/// pixel, as stored (EXIF orientation is reported in `orientation`, 1-8, not applied; 1 when the
/// file has none).
///
/// Every PNG colour type decodes: grey is replicated to R, G and B; palette entries are looked up;
/// 1/2/4-bit grey is scaled to 0-255; 16-bit samples keep their high byte; an alpha channel or tRNS
/// transparency is discarded (the colour stored under a transparent pixel is kept, not composited
/// onto a background); gAMA/iCCP are ignored. JPEGs may be grey, YCbCr/RGB or CMYK/YCCK (converted
/// as R = (255-C)(255-K)/255, with Adobe-inverted CMYK inverted first).
///
/// Returns NULL and writes a message to `error` when the file cannot be opened or decoded, is
/// truncated, or its header announces more than `max_pixels` pixels (checked before any pixel
/// memory is allocated). Never exits or aborts. Free the result with distill_free_image.
unsigned char *distill_decode_image(const char *path, size_t max_pixels, int *width, int *height,
                                    int *orientation, char *error, size_t error_size);

/// Reads only the header of a PNG or JPEG: its stored width and height and its EXIF orientation
/// (1-8; 1 when absent). Returns 0 on success, -1 with a message in `error` otherwise.
int distill_probe_image(const char *path, int *width, int *height, int *orientation, char *error,
                        size_t error_size);

void distill_free_image(unsigned char *pixels);

#endif
