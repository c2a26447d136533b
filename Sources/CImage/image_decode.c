#include "include/image_decode.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

static int too_large(const char *kind, size_t width, size_t height, size_t max_pixels, char *error, size_t size) {
  if (width * height <= max_pixels) return 0;
  snprintf(error, size, "%s of %zux%zu pixels is larger than the limit of %zu pixels", kind, width, height, max_pixels);
  return 1;
}

struct png_failure {
  char *error;
  size_t size;
};

static void png_fail(png_structp png, png_const_charp message) {
  struct png_failure *failure = (struct png_failure *)png_get_error_ptr(png);
  snprintf(failure->error, failure->size, "corrupt or truncated PNG: %s", message);
  png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp message) {
  (void)png;
  (void)message;
}

/// Decodes (or, with `probe`, only reads the header of) a PNG. Uses libpng's low-level API so that
/// no gamma correction or alpha compositing happens (see image_decode.h for the conversions).
static unsigned char *decode_png(FILE *file, int probe, size_t max_pixels, int *width, int *height, char *error,
                                 size_t size) {
  struct png_failure failure = {error, size};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, png_fail, png_warn);
  if (!png) {
    snprintf(error, size, "out of memory for the PNG decoder");
    return NULL;
  }
  png_infop info = png_create_info_struct(png);
  unsigned char *volatile pixels = NULL;
  png_bytep *volatile rows = NULL;
  if (!info || setjmp(png_jmpbuf(png))) {
    if (!info) snprintf(error, size, "out of memory for the PNG decoder");
    free(rows);
    free(pixels);
    png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    return NULL;
  }
  png_init_io(png, file);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if (probe || too_large("PNG", w, h, max_pixels, error, size)) {
    png_destroy_read_struct(&png, &info, NULL);
    *width = (int)w;
    *height = (int)h;
    return probe ? (unsigned char *)"" : NULL;
  }
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  size_t channels = png_get_channels(png, info), stride = png_get_rowbytes(png, info);
  if (png_get_bit_depth(png, info) != 8 || (channels != 3 && channels != 4) || stride != channels * w) {
    png_error(png, "unexpected pixel layout after conversion");
  }
  pixels = malloc(stride * h);
  rows = malloc(sizeof(png_bytep) * h);
  if (!pixels || !rows) {
    snprintf(error, size, "out of memory for a %ux%u image", (unsigned)w, (unsigned)h);
    free(rows);
    free(pixels);
    png_destroy_read_struct(&png, &info, NULL);
    return NULL;
  }
  for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + stride * y;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  if (channels == 4) {
    // tRNS expanded to an alpha channel: drop it, keeping the stored colour.
    for (size_t i = 0; i < (size_t)w * h; i++) memmove(pixels + i * 3, pixels + i * 4, 3);
  }
  free(rows);
  png_destroy_read_struct(&png, &info, NULL);
  *width = (int)w;
  *height = (int)h;
  return pixels;
}

static unsigned read16(const unsigned char *p, int little) {
  return little ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t read32(const unsigned char *p, int little) {
  return little ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
                : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/// The Orientation tag (0x0112) of IFD0 in an APP1 "Exif\0\0" segment, in either TIFF byte order;
/// 0 when absent, malformed or out of range 1-8. Every offset is bounds-checked.
static int exif_orientation(const unsigned char *data, size_t length) {
  if (length < 6 + 8 || memcmp(data, "Exif\0\0", 6) != 0) return 0;
  const unsigned char *tiff = data + 6;
  size_t n = length - 6;
  int little;
  if (tiff[0] == 'I' && tiff[1] == 'I') {
    little = 1;
  } else if (tiff[0] == 'M' && tiff[1] == 'M') {
    little = 0;
  } else {
    return 0;
  }
  if (read16(tiff + 2, little) != 42) return 0;
  size_t ifd = read32(tiff + 4, little);
  if (ifd > n - 2) return 0;
  size_t count = read16(tiff + ifd, little);
  for (size_t i = 0; i < count; i++) {
    size_t entry = ifd + 2 + 12 * i;
    if (entry > n - 12) return 0;
    if (read16(tiff + entry, little) != 0x0112) continue;
    unsigned type = read16(tiff + entry + 2, little);
    uint32_t values = read32(tiff + entry + 4, little);
    if (type != 3 || values < 1) return 0;
    unsigned value = read16(tiff + entry + 8, little);
    return value >= 1 && value <= 8 ? (int)value : 0;
  }
  return 0;
}

struct jpeg_failure {
  struct jpeg_error_mgr manager;
  jmp_buf jump;
};

/// Replaces libjpeg's error_exit (which calls exit()) with a longjmp back to the decoder.
static void jpeg_fail(j_common_ptr info) {
  struct jpeg_failure *failure = (struct jpeg_failure *)info->err;
  longjmp(failure->jump, 1);
}

/// Warnings are ignored except "Premature end of JPEG file": libjpeg would pad a truncated file
/// with grey, and a truncated image must be refused instead.
static void jpeg_message(j_common_ptr info, int level) {
  if (level == -1 && info->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(info);
  if (level == -1) info->err->num_warnings++;
}

static unsigned char *decode_jpeg(FILE *file, int probe, size_t max_pixels, int *width, int *height,
                                  int *orientation, char *error, size_t size) {
  struct jpeg_decompress_struct info;
  struct jpeg_failure failure;
  unsigned char *volatile pixels = NULL;
  unsigned char *volatile row = NULL;
  memset(&info, 0, sizeof info);
  info.err = jpeg_std_error(&failure.manager);
  failure.manager.error_exit = jpeg_fail;
  failure.manager.emit_message = jpeg_message;
  if (setjmp(failure.jump)) {
    char message[JMSG_LENGTH_MAX];
    (*info.err->format_message)((j_common_ptr)&info, message);
    snprintf(error, size, "corrupt or truncated JPEG: %s", message);
    jpeg_destroy_decompress(&info);
    free(row);
    free(pixels);
    return NULL;
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_save_markers(&info, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&info, TRUE);
  *orientation = 1;
  for (jpeg_saved_marker_ptr marker = info.marker_list; marker; marker = marker->next) {
    int value = marker->marker == JPEG_APP0 + 1 ? exif_orientation(marker->data, marker->data_length) : 0;
    if (value) {
      *orientation = value;
      break;
    }
  }
  if (probe || too_large("JPEG", info.image_width, info.image_height, max_pixels, error, size)) {
    *width = (int)info.image_width;
    *height = (int)info.image_height;
    jpeg_destroy_decompress(&info);
    return probe ? (unsigned char *)"" : NULL;
  }
  int cmyk = info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK;
  int inverted = cmyk && info.saw_Adobe_marker;
  info.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&info);
  size_t w = info.output_width, h = info.output_height, stride = w * 3;
  pixels = malloc(stride * h);
  row = malloc(w * (size_t)info.output_components);
  if (!pixels || !row) {
    snprintf(error, size, "out of memory for a %zux%zu image", w, h);
    jpeg_destroy_decompress(&info);
    free(row);
    free(pixels);
    return NULL;
  }
  while (info.output_scanline < h) {
    size_t y = info.output_scanline;
    unsigned char *target = cmyk ? row : pixels + stride * y;
    JSAMPROW rows[1] = {target};
    jpeg_read_scanlines(&info, rows, 1);
    if (!cmyk) continue;
    for (size_t x = 0; x < w; x++) {
      const unsigned char *p = row + 4 * x;
      unsigned k = inverted ? p[3] : 255u - p[3];
      for (int c = 0; c < 3; c++) {
        unsigned v = inverted ? p[c] : 255u - p[c];
        pixels[stride * y + 3 * x + c] = (unsigned char)((v * k + 127) / 255);
      }
    }
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  free(row);
  *width = (int)w;
  *height = (int)h;
  return pixels;
}

static unsigned char *decode(const char *path, int probe, size_t max_pixels, int *width, int *height,
                             int *orientation, char *error, size_t error_size) {
  *orientation = 1;
  FILE *file = fopen(path, "rb");
  if (!file) {
    snprintf(error, error_size, "cannot open the file");
    return NULL;
  }
  unsigned char magic[8] = {0};
  size_t got = fread(magic, 1, sizeof magic, file);
  rewind(file);
  unsigned char *pixels = NULL;
  if (got >= 8 && png_sig_cmp(magic, 0, 8) == 0) {
    pixels = decode_png(file, probe, max_pixels, width, height, error, error_size);
  } else if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    pixels = decode_jpeg(file, probe, max_pixels, width, height, orientation, error, error_size);
  } else {
    snprintf(error, error_size, "neither a PNG nor a JPEG file");
  }
  fclose(file);
  return pixels;
}

unsigned char *distill_decode_image(const char *path, size_t max_pixels, int *width, int *height, int *orientation,
                                    char *error, size_t error_size) {
  return decode(path, 0, max_pixels, width, height, orientation, error, error_size);
}

int distill_probe_image(const char *path, int *width, int *height, int *orientation, char *error,
                        size_t error_size) {
  return decode(path, 1, SIZE_MAX, width, height, orientation, error, error_size) ? 0 : -1;
}

void distill_free_image(unsigned char *pixels) { free(pixels); }
